"""The bundled demo call that ``jsqa-monitor --demo`` plays through the engine.

Clean speech, then cafe noise, then packet loss, then clean again (built by
``scripts/make_demo.py``; sources and licences in ``jsqa/assets/DEMO_ATTRIBUTION.txt``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_FILE = "demo_call.flac"
ATTRIBUTION_FILE = "DEMO_ATTRIBUTION.txt"


def demo_path() -> Path:
    """Path of the demo call; FileNotFoundError (saying how to rebuild it) if it is missing."""
    path = Path(str(resources.files("jsqa.assets") / DEMO_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"the demo call {path} is missing: reinstall jsqa, or rebuild it with "
            "`python scripts/make_demo.py` in a source checkout"
        )
    return path

