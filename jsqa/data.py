"""Where the data lives: the shared speech, noise and rated folders.

Nothing is downloaded. The data root is ``$JSQA_DATA`` when set, else the first
``shared/data`` found beside the current directory or the source checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


def find_data_root() -> Path:
    """Return the data root, or raise FileNotFoundError saying how to set it."""
    env = os.environ.get("JSQA_DATA")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"JSQA_DATA={env} is not a folder")
        return root
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if (candidate / "speech").is_dir():
                return candidate
    raise FileNotFoundError(
        "no data folder found: set JSQA_DATA to a folder holding speech/ and noise/ "
        "(for example ../shared/data)"
    )


def list_audio(folder: str | os.PathLike, exclude: tuple[str, ...] = ()) -> list[Path]:
    """All audio files below ``folder``, sorted; paths containing any ``exclude`` part are left out."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist")
    files = [folder] if folder.is_file() else sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
    )
    return [p for p in files if not any(part in p.parts for part in exclude)]
