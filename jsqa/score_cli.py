"""``jsqa-score``: predict the MOS of audio files with the shipped (or a given) ONNX model."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jsqa.cli_args import positive_int
from jsqa.data import AUDIO_SUFFIXES
from jsqa.sanitize import printable

if TYPE_CHECKING:
    from jsqa.scorer import ScoreResult

GLOB_CHARS = set("*?[")


@dataclass
class FileScore:
    path: str
    duration_s: float
    result: ScoreResult


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jsqa-score",
        description="Predict speech quality (MOS 1-5, no reference needed) of audio files. Any format and "
        "sample rate soundfile reads is accepted; stereo is mixed down and everything is resampled to the "
        "model's rate. Files are scored in windows (3 s, hop 1 s for the shipped model); the file's score "
        "is the mean of its windows.",
        epilog="Exit status: 0 when at least one file was scored (unreadable files are reported on stderr), "
        "1 when nothing could be scored.",
    )
    parser.add_argument("paths", nargs="+", help="audio files, folders (searched recursively) or glob patterns")
    parser.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format (default: table)"
    )
    parser.add_argument("--per-window", action="store_true", help="also print the score of every window")
    parser.add_argument("--model", type=Path, help="ONNX model file (default: the shipped jsqa-small.onnx)")
    parser.add_argument("--threads", type=positive_int, help="ONNX Runtime intra-op threads (default: all cores)")
    return parser


def expand_paths(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to score, and ``(pattern, problem)`` for patterns that matched nothing."""
    files, problems = [], []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append((pattern, "no audio files in this folder"))
            files += found
        elif path.exists():
            files.append(path)
        elif GLOB_CHARS & set(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((pattern, "no files match this pattern"))
            files += found
        else:
            problems.append((pattern, "no such file or folder"))
    return list(dict.fromkeys(files)), problems


def score_files(scorer, files: list[Path], show_progress: bool):
    from rich.progress import Progress

    from jsqa.audio import load_audio

    scored, failed = [], []
    with Progress(transient=True, disable=not show_progress) as progress:
        task = progress.add_task("scoring", total=len(files))
        for path in files:
            try:
                audio = load_audio(path, scorer.sample_rate)
                if audio.size == 0:
                    raise ValueError("no audio samples")
                scored.append(FileScore(str(path), audio.size / scorer.sample_rate, scorer.score(audio)))
            except Exception as e:  # noqa: BLE001 - report any unreadable file and go on
                failed.append((str(path), str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
            progress.advance(task)
    return scored, failed


def write_table(scores: list[FileScore], per_window: bool, model_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"JSQA MOS ({model_name})")
    table.add_column("file", overflow="fold")
    if per_window:
        table.add_column("window", justify="right")
    table.add_column("duration", justify="right")
    table.add_column("MOS", justify="right")
    for s in scores:
        if per_window:
            table.add_row(s.path, "all", f"{s.duration_s:.2f} s", _shown(s.result.mos), style="bold")
            for w in s.result.windows:
                table.add_row("", f"{w.t_start:.2f}-{w.t_end:.2f} s", "", _shown(w.mos if w.speech else None))
        else:
            table.add_row(s.path, f"{s.duration_s:.2f} s", _shown(s.result.mos))
    Console().print(table)


def _shown(mos: float | None) -> str:
    return "no speech" if mos is None else f"{mos:.2f}"


def _fixed(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def write_csv(scores: list[FileScore], per_window: bool) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if per_window:
        writer.writerow(["file", "t_start", "t_end", "mos"])
        for s in scores:
            for w in s.result.windows:
                writer.writerow([s.path, f"{w.t_start:.3f}", f"{w.t_end:.3f}", _fixed(w.mos if w.speech else None)])
    else:
        writer.writerow(["file", "duration_s", "mos"])
        for s in scores:
            writer.writerow([s.path, f"{s.duration_s:.3f}", _fixed(s.result.mos)])


def write_json(scores: list[FileScore], failed, per_window: bool, model_name: str) -> None:
    results = []
    for s in scores:
        item = {"file": s.path, "duration_s": round(s.duration_s, 3), "mos": _rounded(s.result.mos)}
        if per_window:
            item["windows"] = [
                {"t_start": w.t_start, "t_end": w.t_end, "mos": _rounded(w.mos if w.speech else None)} for w in s.result.windows
            ]
        results.append(item)
    errors = [{"file": path, "error": why} for path, why in failed]
    json.dump({"model": model_name, "results": results, "errors": errors}, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jsqa.scorer import ModelError, Scorer

    try:
        scorer = Scorer(args.model, intra_threads=args.threads)
    except ModelError as e:
        print(f"jsqa-score: {e}", file=sys.stderr)
        return 1
    files, problems = expand_paths(args.paths)
    scored, failed = score_files(scorer, files, show_progress=len(files) > 1 and sys.stderr.isatty())
    failed = problems + failed
    for path, why in failed:
        # file names and decoder messages may hold control characters: shown, not obeyed
        print(f"jsqa-score: {printable(path)}: {printable(why)}", file=sys.stderr)
    for s in scored:
        if s.result.mos is None:
            print(f"jsqa-score: warning: {s.path}: no speech found, so no MOS (silence or noise only)",
                  file=sys.stderr)
    if args.format == "table":
        write_table(scored, args.per_window, scorer.name)
    elif args.format == "csv":
        write_csv(scored, args.per_window)
    else:
        write_json(scored, failed, args.per_window, scorer.name)
    if not scored:
        print("jsqa-score: nothing could be scored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
