"""Speed of JSQA (ONNX fp32, ONNX int8, torch, optionally another JSQA model) against DNSMOS
and DistillMOS, files scored as ``jsqa-score`` scores them (3 s windows, 1 s hop).

One run, the same files and the same thread count for every model. CPU s / audio s = CPU
time of the process (all its threads) per second of audio; wall RTF = wall time per second
of audio (lower is faster). The models take turns in each repetition, so a
load spike from other processes on the machine hits all of them alike; the median over
repetitions is reported. Each model is warmed up once on the first file first.

    python bench/speed.py [--model FILE] [--compare OLD.onnx] [--checkpoint CKPT] [--threads 2] [--repeats 3] [FILES...]

Peers (optional; skipped with a note when missing): ``pip install --no-deps speechmos
distillmos xls-r-sqa`` plus ``pip install -e ".[bench]"``. DNSMOS windows are 9 s with a
1 s hop (clips under 9 s are tiled to 9 s); DistillMOS segments internally. Without
``--checkpoint`` the torch row runs the model's preset with random weights: the same
computation, so the same speed.

``--streaming`` instead measures the streaming engine: CPU seconds per audio second
with whole-window scoring against split scoring (each hop encoded once), on the same
streams of real speech fed in 100 ms frames (needs a model exported with its parts).

    python bench/speed.py --streaming --model X.onnx [--streams 4] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jsqa.streaming.engine import Engine
from load import load_average, speech_loop
from peers import distillmos, dnsmos, jsqa_onnx, jsqa_torch
from rich.console import Console
from rich.table import Table

from jsqa.audio import load_audio
from jsqa.data import find_data_root, list_audio
from jsqa.scorer import DEFAULT_MODEL, Scorer

DEFAULT_FOLDERS = ("speech/librispeech_examples", "speech/cmu_arctic")
FRAME = 1600  # 100 ms at 16 kHz


async def _stream_all(engine: Engine, signals: list) -> None:
    for i in range(len(signals)):
        engine.open_stream(f"s{i}", "bench", lossless=True)
    for at in range(0, max(x.size for x in signals), FRAME):
        for i, x in enumerate(signals):
            if at < x.size:
                await engine.push(f"s{i}", x[at : at + FRAME])
        await asyncio.sleep(0)
    for i in range(len(signals)):
        engine.end_stream(f"s{i}")
    await engine.drain()


def engine_cpu(scorer: Scorer, signals: list) -> tuple[float, float, Engine]:
    """(CPU seconds of this process, wall seconds, the engine) for streaming ``signals``."""
    async def run() -> Engine:
        async with Engine(scorer) as engine:
            await _stream_all(engine, signals)
        return engine

    cpu, wall = time.process_time(), time.perf_counter()
    engine = asyncio.run(run())
    return time.process_time() - cpu, time.perf_counter() - wall, engine


def streaming(args) -> int:
    console = Console()
    speech = speech_loop(args.streams * args.seconds + 10)
    n = round(args.seconds * 16000)
    # each stream starts elsewhere in the speech, so the batches hold different audio
    signals = [speech[i * n + 16000 * i : (i + 1) * n + 16000 * i] for i in range(args.streams)]
    audio_seconds = args.streams * args.seconds
    modes = {"whole window": Scorer(args.model, intra_threads=args.threads, split=False)}
    split = Scorer(args.model, intra_threads=args.threads)
    if split.split is None:
        console.print(f"{args.model} has no split parts beside it (export it with jsqa-export): whole window only")
    else:
        modes["split (each hop once)"] = split
    table = Table(
        title=f"Streaming engine, {args.streams} streams x {args.seconds:.0f} s of speech in 100 ms frames,"
        f" {args.threads} threads"
    )
    for column in ("scoring", "CPU s / audio s", "wall s", "windows scored", "streams per core"):
        table.add_column(column, justify="left" if column == "scoring" else "right")
    figures = {}
    for name, scorer in modes.items():
        engine_cpu(scorer, [x[: 4 * 16000] for x in signals[:1]])  # warm-up
        cpu, wall, engine = engine_cpu(scorer, signals)
        figures[name] = cpu / audio_seconds
        table.add_row(name, f"{cpu / audio_seconds:.4f}", f"{wall:.1f}", str(engine.windows_scored),
                      f"{audio_seconds / cpu:.0f}")
    console.print(f"model: {args.model}")
    console.print(table)
    if len(figures) == 2:
        whole, parts = figures.values()
        console.print(f"split uses {parts / whole:.2f}x the CPU of whole-window scoring ({whole / parts:.2f}x less)")
    console.print(load_average())
    return 0


def build_models(args) -> tuple[dict, list[str]]:
    models, notes = {}, []
    models["JSQA ONNX fp32"] = jsqa_onnx(args.model, args.threads)
    if args.compare:
        models[f"JSQA {args.compare.name} (--compare)"] = jsqa_onnx(args.compare, args.threads)
    from jsqa.export.quantize import quantize_int8

    int8_path = Path(tempfile.mkdtemp()) / "int8.onnx"
    quantize_int8(args.model, int8_path)
    models["JSQA ONNX int8"] = jsqa_onnx(int8_path, args.threads)
    builders = {
        "JSQA torch": lambda: jsqa_torch(args.model, args.checkpoint, args.threads),
        "DNSMOS (speechmos)": lambda: dnsmos(args.threads),
        "DistillMOS": lambda: distillmos(args.threads),
    }
    for name, build in builders.items():
        try:
            models[name] = build()
        except ImportError as e:
            notes.append(f"{name} skipped: {e} (see bench/speed.py docstring)")
    return models, notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files (default: a minute of shared speech)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="JSQA ONNX model (default: shipped)")
    parser.add_argument("--checkpoint", type=Path, help="torch checkpoint for the torch row")
    parser.add_argument("--compare", type=Path, help="another JSQA ONNX model for a row of its own (e.g. an older one)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every model (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the files (default 3)")
    parser.add_argument("--streaming", action="store_true", help="engine CPU: whole-window vs split scoring")
    parser.add_argument("--streams", type=int, default=4, help="--streaming: concurrent streams (default 4)")
    parser.add_argument("--seconds", type=float, default=15.0, help="--streaming: seconds per stream (default 15)")
    args = parser.parse_args(argv)
    if args.streaming:
        return streaming(args)

    files = args.files or [f for folder in DEFAULT_FOLDERS for f in list_audio(find_data_root() / folder)]
    audio = [load_audio(f) for f in files]
    duration = sum(x.size for x in audio) / 16000
    models, notes = build_models(args)
    for score in models.values():
        score(audio[0])

    # CPU time (all threads of this process) is the cost; wall time also counts waiting
    # for a core on a shared machine.
    times: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, score in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for x in audio:
                score(x)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    rtf = {name: statistics.median(t) / duration for name, t in times.items()}
    cpu_rtf = {name: statistics.median(t) / duration for name, t in cpu.items()}
    ours = cpu_rtf["JSQA ONNX fp32"]
    table = Table(
        title=f"Speed: {len(files)} files, {duration:.1f} s of audio, {args.threads} threads,"
        f" median of {args.repeats}, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    for column in ("model", "CPU s / audio s", "wall RTF", "its CPU / JSQA fp32 CPU"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in rtf:
        table.add_row(name, f"{cpu_rtf[name]:.4f}", f"{rtf[name]:.4f}", f"{cpu_rtf[name] / ours:.2f}")
    console = Console()
    console.print(f"model: {args.model}")
    console.print(table)
    for note in notes:
        console.print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
