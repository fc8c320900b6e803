"""Load benchmark for the streaming server (run by hand; figures go in the README).

Starts ``jsqa-monitor --listen`` in its own process, then opens N WebSocket streams of
real speech from this process, each paced in real time (a 100 ms frame is sent when its
last sample would exist on a live call), with start times spread over one hop. Reports
window-end-to-score latency as the client sees it (p50/p99), the server's own latency,
dropped windows (server counter and windows the clients never got), and the server
process's CPU and peak RSS. With several N it reports the largest N that kept p99 under
the target with no window dropped.

    python bench/load.py --model jsqa/assets/jsqa-small.onnx --streams 25,50,100,150 --seconds 20
    python bench/load.py --streams 100 --profile profile.svg   # py-spy flame graph of the server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from jsqa.audio import load_audio
from jsqa.data import find_data_root, list_audio

FRAME_S = 0.1


def speech_loop(seconds: float = 120.0) -> np.ndarray:
    """A couple of minutes of real read speech to loop over (LibriSpeech, LibriVox, ARCTIC)."""
    root = find_data_root() / "speech"
    files = [f for sub in ("librispeech_examples", "pocketsphinx", "cmu_arctic") for f in list_audio(root / sub)]
    audio = np.concatenate([load_audio(f) for f in files])
    return np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, url: str, pcm: bytes, offset_s: float, seconds: float, delay_s: float):
        self.url = url
        self.pcm = pcm
        self.offset = int(offset_s * 16000) * 2
        self.frames = int(seconds / FRAME_S)
        self.delay = delay_s
        self.start = 0.0
        self.latencies: list[float] = []
        self.server_latencies: list[float] = []
        self.windows = 0
        self.error = ""

    async def run(self, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(self.delay)
        frame = int(FRAME_S * 16000) * 2
        try:
            async with session.ws_connect(self.url, max_msg_size=0) as ws:
                reader = asyncio.create_task(self._read(ws))
                self.start = time.monotonic()
                for i in range(self.frames):
                    # audio up to (i+1)*FRAME_S exists only at that moment on a live call
                    await asyncio.sleep(max(0.0, self.start + (i + 1) * FRAME_S - time.monotonic()))
                    at = (self.offset + i * frame) % (len(self.pcm) - frame)
                    await ws.send_bytes(self.pcm[at : at + frame])
                await ws.send_str('{"type": "end"}')
                await reader
                if ws.close_code not in (1000, None):
                    self.error = f"closed {ws.close_code}"
        except aiohttp.ClientError as e:
            self.error = str(e)

    async def _read(self, ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            if event["type"] == "score":
                now = time.monotonic()
                self.windows += 1
                self.latencies.append(now - (self.start + event["t_end"]))
                self.server_latencies.append(event["latency_ms"] / 1000)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


async def run_load(url: str, http: str, n: int, seconds: float, hop: float, pcm: bytes, proc: psutil.Process) -> dict:
    rng = random.Random(n)
    loop_s = len(pcm) / 2 / 16000
    clients = [Client(f"{url}/v1/stream?stream_id=load{i}", pcm, rng.uniform(0, loop_s), seconds, rng.uniform(0, 1.0))
               for i in range(n)]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}/metrics") as r:
            before = await r.text()
        proc.cpu_percent()
        me = psutil.Process()
        me.cpu_percent()
        began = time.monotonic()
        rss = proc.memory_info().rss
        cpu_samples = []
        tasks = [asyncio.create_task(c.run(session)) for c in clients]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            cpu_samples.append(proc.cpu_percent())
            rss = max(rss, proc.memory_info().rss)
        async with session.get(f"{http}/metrics") as r:
            after = await r.text()
        wall = time.monotonic() - began
        client_cpu = me.cpu_percent()
    latencies = np.concatenate([c.latencies for c in clients]) * 1000
    server = np.concatenate([c.server_latencies for c in clients]) * 1000
    audio = round(int(seconds / FRAME_S) * FRAME_S, 6)
    expected = n * (int((audio - 3.0) // hop) + 1 + (1 if (audio - 3.0) % hop else 0))
    received = sum(c.windows for c in clients)
    return {
        "streams": n,
        "windows": received,
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
        "server_p50_ms": float(np.percentile(server, 50)) if len(server) else None,
        "server_p99_ms": float(np.percentile(server, 99)) if len(server) else None,
        "dropped": int(metric(after, "jsqa_windows_dropped_total") - metric(before, "jsqa_windows_dropped_total")),
        "missing": max(0, expected - received),
        "errors": sum(1 for c in clients if c.error),
        "server_cpu_percent": float(np.mean(cpu_samples[1:-1] or cpu_samples)) if cpu_samples else None,
        "server_rss_mb": rss / 2**20,
        "client_cpu_percent": client_cpu,
        # share of the run the scoring thread spent in its batched model calls (and VAD/levels)
        "scoring_busy_percent": 100 * (metric(after, "jsqa_inference_seconds_sum")
                                       - metric(before, "jsqa_inference_seconds_sum")) / wall,
        "mean_batch": (metric(after, "jsqa_windows_scored_total") + metric(after, "jsqa_windows_no_speech_total")
                       - metric(before, "jsqa_windows_scored_total") - metric(before, "jsqa_windows_no_speech_total"))
                      / max(1.0, metric(after, "jsqa_inference_seconds_count") - metric(before, "jsqa_inference_seconds_count")),
    }


def summarise_profile(path: str, top: int = 12) -> str:
    """Where the server's samples went, from py-spy's collapsed stacks (``.txt``): per
    thread, then the functions that were on top of the stack most often."""
    threads: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        thread = re.sub(r"thread \(\d+\): ", "", frames[0])
        threads[thread] = threads.get(thread, 0) + n
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + n
    lines = [f"{total} samples"]
    lines += [f"  thread {name}: {100 * n / total:.0f}%" for name, n in sorted(threads.items(), key=lambda kv: -kv[1])]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


@contextlib.contextmanager
def server_process(model: str | None, hop: float | None, max_batch: int, port: int, profile: str | None,
                   profile_seconds: float):
    cmd = [sys.executable, "-m", "jsqa.streaming", "--listen", f"127.0.0.1:{port}", "--no-dashboard",
           "--max-streams", "10000", "--alert-threshold", "1"]
    if model:
        cmd += ["--model", model]
    if hop:
        cmd += ["--hop", str(hop)]
    cmd += ["--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    banner = proc.stderr.readline()
    if "listening" not in banner:
        proc.kill()
        raise SystemExit(f"server did not start: {banner}{proc.stderr.read()}")
    spy = None
    if profile:
        spy = subprocess.Popen(["py-spy", "record", "-p", str(proc.pid), "-d", str(int(profile_seconds)),
                                "-o", profile, "--threads", "--nonblocking", "-f",
                                {".json": "speedscope", ".txt": "raw"}.get(Path(profile).suffix, "flamegraph")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if spy is not None:
            spy.wait(timeout=profile_seconds + 30)
        proc.terminate()
        proc.wait(timeout=20)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="ONNX model (default: the shipped one)")
    p.add_argument("--streams", default="25,50,100", help="comma-separated stream counts to try (default 25,50,100)")
    p.add_argument("--seconds", type=float, default=20.0, help="audio per stream in each run (default 20)")
    p.add_argument("--hop", type=float, help="server's seconds between windows (default: the model's)")
    p.add_argument("--max-batch", type=int, default=32, help="server's most windows per model call (default 32)")
    p.add_argument("--target-ms", type=float, default=300.0, help="p99 latency target (default 300)")
    p.add_argument("--profile", metavar="FILE",
                   help="record the server with py-spy: .svg flame graph, .json speedscope, .txt collapsed stacks")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    counts = [int(n) for n in args.streams.split(",")]
    pcm = (np.clip(speech_loop(), -1, 1) * 32767).astype("<i2").tobytes()
    results = []
    for n in counts:
        port = free_port()
        with server_process(args.model, args.hop, args.max_batch, port, args.profile, args.seconds) as proc:
            result = asyncio.run(run_load(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", n, args.seconds,
                                          args.hop or 1.0, pcm, psutil.Process(proc.pid)))
        results.append(result)
        ok = result["p99_ms"] is not None and result["p99_ms"] < args.target_ms and not result["dropped"] and not result["missing"]
        print(f"N={n:4d}  p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
              f"(server p50 {result['server_p50_ms']:.1f} p99 {result['server_p99_ms']:.1f})  "
              f"dropped {result['dropped']}  missing {result['missing']}  errors {result['errors']}  "
              f"server CPU {result['server_cpu_percent']:.0f}%  RSS {result['server_rss_mb']:.0f} MB  "
              f"(clients CPU {result['client_cpu_percent']:.0f}%)  "
              f"scoring busy {result['scoring_busy_percent']:.0f}% (mean batch {result['mean_batch']:.1f})  "
              f"{'OK' if ok else 'over target'}", flush=True)
    passing = [r["streams"] for r in results if r["p99_ms"] is not None and r["p99_ms"] < args.target_ms
               and not r["dropped"] and not r["missing"]]
    print(f"largest N with p99 < {args.target_ms:g} ms and no dropped window: {max(passing) if passing else 'none'}"
          f" (cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.profile and args.profile.endswith(".txt"):
        print(summarise_profile(args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
