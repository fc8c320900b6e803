"""Load benchmark for the streaming server (run by hand; figures go in docs/benchmarks).

Starts ``jsqa-monitor --listen`` in its own process, then opens WebSocket streams of real
speech from this process, each paced in real time (a 100 ms frame is sent when its last
sample would exist on a live call), with start times spread over one hop. Reports
window-end-to-score latency as the clients see it (p50/p99), dropped windows (the
server's counter, and windows the clients never got), and the server's CPU and RSS.
Every report ends with the machine's load average: on a shared machine the figures mean
little without it.

Three modes:

capacity (default): one run per N in ``--streams``; the largest N with p99 under
``--target-ms`` and no window dropped.

    python bench/load.py --streams 25,50,100,150 --seconds 20
    python bench/load.py --streams 100 --profile profile.svg   # py-spy flame graph of the server

noisy neighbour (``--noisy``): N live streams, and after ``--warm`` seconds
``--bursters`` clients that each send the server's whole burst allowance at once and then
audio at nearly the fastest speed allowed, for ``--burst-for`` seconds. Reports the live
streams' p99 before, during and after the bursts, and the server's RSS: baseline (live
streams only), peak, and ``--settle`` seconds after the bursts end.

    python bench/load.py --noisy --streams 100 --bursters 30

soak (``--minutes M``): N streams for M minutes; every ``--every`` seconds the server's
RSS, the p99 of that interval and the windows dropped so far.

    python bench/load.py --minutes 30 --streams 64
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

from jsqa.audio import load_audio
from jsqa.data import find_data_root, list_audio

FRAME_S = 0.1
WINDOW_S = 3.0


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


def load_average() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the clients), not of the server it started."""
    t = os.times()
    return t.user + t.system


def percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def ms(value: float | None) -> str:
    return "    -   " if value is None else f"{value:7.1f}"


class Client:
    """A live call: 100 ms frames, each sent when its last sample would exist."""

    def __init__(self, url: str, pcm: bytes, offset_s: float, seconds: float, delay_s: float):
        self.url = url
        self.pcm = pcm
        self.offset = int(offset_s * 16000) * 2
        self.frames = int(seconds / FRAME_S)
        self.delay = delay_s
        self.start = 0.0
        # (when the score arrived, window-end-to-score latency)
        self.scores: list[tuple[float, float]] = []
        self.error = ""

    @property
    def expected_windows(self) -> int:
        audio = round(self.frames * FRAME_S, 6)
        return int((audio - WINDOW_S) // 1.0) + 1 + (1 if (audio - WINDOW_S) % 1.0 else 0)

    def frame(self, i: int, frame_bytes: int) -> bytes:
        at = (self.offset + i * frame_bytes) % (len(self.pcm) - frame_bytes)
        return self.pcm[at : at + frame_bytes]

    async def run(self, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(self.delay)
        try:
            async with session.ws_connect(self.url, max_msg_size=0) as ws:
                reader = asyncio.create_task(self._read(ws))
                self.start = time.monotonic()
                await self._send(ws, int(FRAME_S * 16000) * 2)
                await ws.send_str('{"type": "end"}')
                await reader
                if ws.close_code not in (1000, None):
                    self.error = f"closed {ws.close_code}: {ws.exception() or ''}"
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            self.error = str(e) or type(e).__name__

    async def _send(self, ws, size: int) -> None:
        for i in range(self.frames):
            # audio up to (i+1)*FRAME_S exists only at that moment on a live call
            await asyncio.sleep(max(0.0, self.start + (i + 1) * FRAME_S - time.monotonic()))
            await ws.send_bytes(self.frame(i, size))

    async def _read(self, ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            if event["type"] == "score":
                now = time.monotonic()
                self.scores.append((now, now - (self.start + event["t_end"])))


class Burster(Client):
    """A client that spends the server's burst allowance at once, then sends as fast as
    the server allows (a little under ``max_speed``), for ``seconds`` of wall time."""

    def __init__(self, url: str, pcm: bytes, offset_s: float, seconds: float, delay_s: float,
                 burst_s: float, speed: float):
        super().__init__(url, pcm, offset_s, seconds, delay_s)
        self.wall = seconds
        self.burst = burst_s
        self.speed = speed * 0.95  # just inside the limit, whatever the timing jitter

    async def _send(self, ws, size: int) -> None:
        i = 0
        while time.monotonic() - self.start < self.wall:
            allowed = self.burst * 0.95 + self.speed * (time.monotonic() - self.start)
            if (i + 1) * FRAME_S > allowed:
                await asyncio.sleep(FRAME_S / self.speed)
                continue
            await ws.send_bytes(self.frame(i, size))  # blocks while the server pushes back
            i += 1
        self.frames = i


def client_session() -> aiohttp.ClientSession:
    # aiohttp's default connector opens at most 100 connections: more clients would queue
    # behind the first hundred instead of streaming at once
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


class ProcStats:
    """RSS and CPU share of a Linux process, read from /proc (no dependency)."""

    def __init__(self, pid: int):
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")
        self._last = (time.monotonic(), self._cpu_seconds())

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024

    def _cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def cpu_percent(self) -> float:
        """CPU use since the previous call, in percent of one core."""
        now, cpu = time.monotonic(), self._cpu_seconds()
        (then, before), self._last = self._last, (now, cpu)
        return 100 * (cpu - before) / max(now - then, 1e-9)


class Server:
    """The server process and what this benchmark samples of it."""

    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = ProcStats(proc.pid)
        self.ws = f"ws://127.0.0.1:{port}"
        self.http = f"http://127.0.0.1:{port}"
        self.rss: list[tuple[float, float]] = []  # (time, MB)
        self.cpu: list[float] = []

    async def metrics(self, session: aiohttp.ClientSession) -> str:
        async with session.get(f"{self.http}/metrics") as r:
            return await r.text()

    def sample(self) -> float:
        mb = self.proc.rss_mb()
        self.rss.append((time.monotonic(), mb))
        self.cpu.append(self.proc.cpu_percent())
        return mb

    def rss_between(self, begin: float, end: float) -> list[float]:
        return [mb for t, mb in self.rss if begin <= t <= end]


@contextlib.contextmanager
def server_process(args, port: int):
    cmd = [sys.executable, "-m", "jsqa.streaming", "--listen", f"127.0.0.1:{port}", "--no-dashboard",
           "--max-streams", "10000", "--alert-threshold", "1", "--max-batch", str(args.max_batch)]
    if args.model:
        cmd += ["--model", args.model]
    if args.hop:
        cmd += ["--hop", str(args.hop)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    banner = proc.stderr.readline()
    if "listening" not in banner:
        proc.kill()
        raise SystemExit(f"server did not start: {banner}{proc.stderr.read()}")
    spy = None
    if args.profile:
        spy = subprocess.Popen(["py-spy", "record", "-p", str(proc.pid), "-d", str(int(args.seconds)),
                                "-o", args.profile, "--threads", "--nonblocking", "-f",
                                {".json": "speedscope", ".txt": "raw"}.get(Path(args.profile).suffix, "flamegraph")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield Server(proc, port)
    finally:
        if spy is not None:
            spy.wait(timeout=args.seconds + 30)
        proc.terminate()
        proc.wait(timeout=20)


def live_clients(server: Server, n: int, seconds: float, pcm: bytes, prefix: str = "live") -> list[Client]:
    rng = random.Random(n)
    loop_s = len(pcm) / 2 / 16000
    return [Client(f"{server.ws}/v1/stream?stream_id={prefix}{i}", pcm, rng.uniform(0, loop_s), seconds,
                   rng.uniform(0, 1.0)) for i in range(n)]


async def drive(server: Server, clients: list[Client], session: aiohttp.ClientSession, every: float = 1.0,
                on_tick=None) -> None:
    """Run the clients to the end, sampling the server every second."""
    server.proc.cpu_percent()
    tasks = [asyncio.create_task(c.run(session)) for c in clients]
    next_tick = time.monotonic() + every
    while not all(t.done() for t in tasks):
        await asyncio.sleep(1.0)
        server.sample()
        if on_tick is not None and time.monotonic() >= next_tick:
            await on_tick()
            next_tick += every
    for task in tasks:
        task.result()


def latencies(clients: list[Client], begin: float = 0.0, end: float = float("inf")) -> np.ndarray:
    return np.array([lat for c in clients for at, lat in c.scores if begin <= at < end]) * 1000


def missing(clients: list[Client]) -> int:
    return sum(max(0, c.expected_windows - len(c.scores)) for c in clients)


# -- modes ----------------------------------------------------------------------------
async def capacity_run(server: Server, n: int, args, pcm: bytes) -> dict:
    clients = live_clients(server, n, args.seconds, pcm)
    async with client_session() as session:
        before = await server.metrics(session)
        began, cpu_began = time.monotonic(), own_cpu_seconds()
        await drive(server, clients, session)
        wall = time.monotonic() - began
        clients_cpu = own_cpu_seconds() - cpu_began
        after = await server.metrics(session)

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    lat = latencies(clients)
    return {
        "streams": n,
        "windows": sum(len(c.scores) for c in clients),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "dropped": int(delta("jsqa_windows_dropped_total")),
        "missing": missing(clients),
        "errors": sum(1 for c in clients if c.error),
        "server_cpu_percent": float(np.mean(server.cpu[1:-1] or server.cpu)) if server.cpu else None,
        "server_rss_mb": max(mb for _, mb in server.rss) if server.rss else None,
        # the clients share the machine: past about one core they, not the server, set the latency
        "clients_cpu_percent": 100 * clients_cpu / wall,
        # share of the run the scoring thread spent in its batched model calls (and VAD/levels)
        "scoring_busy_percent": 100 * delta("jsqa_inference_seconds_sum") / wall,
        "mean_batch": (delta("jsqa_windows_scored_total") + delta("jsqa_windows_no_speech_total"))
                      / max(1.0, delta("jsqa_inference_seconds_count")),
    }


def capacity(args, pcm: bytes) -> list[dict]:
    results = []
    for n in [int(x) for x in args.streams.split(",")]:
        with server_process(args, free_port()) as server:
            r = asyncio.run(capacity_run(server, n, args, pcm))
        r["ok"] = r["p99_ms"] is not None and r["p99_ms"] < args.target_ms and not r["dropped"] and not r["missing"]
        results.append(r)
        print(f"N={n:4d}  p50 {ms(r['p50_ms'])} ms  p99 {ms(r['p99_ms'])} ms  dropped {r['dropped']}  "
              f"missing {r['missing']}  errors {r['errors']}  server CPU {r['server_cpu_percent']:.0f}%  "
              f"RSS {r['server_rss_mb']:.0f} MB  clients CPU {r['clients_cpu_percent']:.0f}%  scoring busy {r['scoring_busy_percent']:.0f}% "
              f"(mean batch {r['mean_batch']:.1f})  {'OK' if r['ok'] else 'over target'}", flush=True)
    passing = [r["streams"] for r in results if r["ok"]]
    print(f"largest N with p99 < {args.target_ms:g} ms and no dropped window: "
          f"{max(passing) if passing else 'none'} ({load_average()})")
    return results


async def noisy_run(server: Server, args, pcm: bytes) -> dict:
    n = int(args.streams.split(",")[0])
    total = args.warm + args.burst_for + args.settle
    live = live_clients(server, n, total, pcm)
    rng = random.Random(0)
    bursters = [Burster(f"{server.ws}/v1/stream?stream_id=burst{i}", pcm, rng.uniform(0, 60), args.burst_for,
                        args.warm + rng.uniform(0, 1.0), args.burst_seconds, args.max_speed)
                for i in range(args.bursters)]
    async with client_session() as session:
        before = await server.metrics(session)
        t0 = time.monotonic()
        await drive(server, live + bursters, session)
        after = await server.metrics(session)
    burst_begin = t0 + args.warm
    burst_end = max(b.start + b.wall for b in bursters) if bursters else burst_begin
    # scores of windows that ended in each phase (arrival minus latency is the window's end)
    def phase(begin, end):
        return np.array([lat * 1000 for c in live for at, lat in c.scores if begin <= at - lat < end])

    baseline = server.rss_between(t0 + WINDOW_S + 1, burst_begin)
    settled = server.rss_between(burst_end + args.settle - 2, burst_end + args.settle + 2)
    return {
        "live_streams": n,
        "bursters": len(bursters),
        "live_p99_ms_before": percentile(phase(t0, burst_begin), 99),
        "live_p99_ms_during": percentile(phase(burst_begin, burst_end), 99),
        "live_p99_ms_after": percentile(phase(burst_end, float("inf")), 99),
        "live_p99_ms": percentile(latencies(live), 99),
        "live_missing": missing(live),
        "dropped": int(metric(after, "jsqa_windows_dropped_total") - metric(before, "jsqa_windows_dropped_total")),
        "burst_windows_scored": sum(len(b.scores) for b in bursters),
        "burst_errors": sorted({b.error for b in bursters if b.error}),
        "rss_baseline_mb": float(np.median(baseline)) if baseline else None,
        "rss_peak_mb": max(mb for _, mb in server.rss),
        "rss_after_settle_mb": float(np.median(settled)) if settled else server.rss[-1][1],
    }


def noisy(args, pcm: bytes) -> dict:
    with server_process(args, free_port()) as server:
        r = asyncio.run(noisy_run(server, args, pcm))
    growth = (r["rss_after_settle_mb"] / r["rss_baseline_mb"] - 1) * 100 if r["rss_baseline_mb"] else float("nan")
    print(f"noisy neighbour: {r['live_streams']} live + {r['bursters']} bursting clients")
    print(f"  live p99: before {ms(r['live_p99_ms_before'])} ms, during {ms(r['live_p99_ms_during'])} ms, "
          f"after {ms(r['live_p99_ms_after'])} ms; all {ms(r['live_p99_ms'])} ms; "
          f"live windows missing {r['live_missing']}, dropped (all streams) {r['dropped']}")
    print(f"  bursters: {r['burst_windows_scored']} windows scored; errors: {r['burst_errors'] or 'none'}")
    print(f"  server RSS: baseline {r['rss_baseline_mb'] or float('nan'):.0f} MB, peak {r['rss_peak_mb']:.0f} MB, "
          f"{args.settle:g} s after the bursts {r['rss_after_settle_mb']:.0f} MB ({growth:+.0f}% on baseline)")
    print(f"  ({load_average()})")
    return r


async def soak_run(server: Server, args, pcm: bytes) -> list[dict]:
    n = int(args.streams.split(",")[0])
    clients = live_clients(server, n, args.minutes * 60, pcm)
    rows: list[dict] = []
    async with client_session() as session:
        start_metrics = await server.metrics(session)
        t0 = time.monotonic()
        last = [t0]

        async def report():
            now = time.monotonic()
            text = await server.metrics(session)
            row = {
                "t_s": round(now - t0),
                "rss_mb": server.rss[-1][1],
                "p99_ms": percentile(latencies(clients, last[0], now), 99),
                "dropped": int(metric(text, "jsqa_windows_dropped_total")
                               - metric(start_metrics, "jsqa_windows_dropped_total")),
                "load": os.getloadavg()[0],
            }
            last[0] = now
            rows.append(row)
            print(f"  t={row['t_s']:5d} s  RSS {row['rss_mb']:6.0f} MB  p99 {ms(row['p99_ms'])} ms  "
                  f"dropped {row['dropped']}  load {row['load']:.1f}", flush=True)

        await drive(server, clients, session, every=args.every, on_tick=report)
        await report()
    rows[-1]["missing"] = missing(clients)
    return rows


def soak(args, pcm: bytes) -> list[dict]:
    n = int(args.streams.split(",")[0])
    print(f"soak: {n} streams for {args.minutes:g} min")
    with server_process(args, free_port()) as server:
        rows = asyncio.run(soak_run(server, args, pcm))
    # the first minute fills caches and the allocator's pools; growth after it is what leaks
    settled = [r["rss_mb"] for r in rows if r["t_s"] >= 60]
    span = "after the first minute" if len(settled) > 1 else "over the whole run (under a minute)"
    settled = settled if len(settled) > 1 else [r["rss_mb"] for r in rows]
    growth = (settled[-1] / settled[0] - 1) * 100
    print(f"soak: dropped {rows[-1]['dropped']}, missing {rows[-1]['missing']}, RSS growth {span} "
          f"{growth:+.1f}% ({load_average()})")
    return rows


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="ONNX model (default: the shipped one)")
    p.add_argument("--streams", default="25,50,100",
                   help="comma-separated live stream counts to try (default 25,50,100); the first for --noisy and soak")
    p.add_argument("--seconds", type=float, default=20.0, help="audio per stream in each capacity run (default 20)")
    p.add_argument("--hop", type=float, help="server's seconds between windows (default: the model's)")
    p.add_argument("--max-batch", type=int, default=32, help="server's most windows per model call (default 32)")
    p.add_argument("--target-ms", type=float, default=200.0, help="p99 latency target (default 200)")
    p.add_argument("--profile", metavar="FILE",
                   help="record the server with py-spy: .svg flame graph, .json speedscope, .txt collapsed stacks")
    noisy_group = p.add_argument_group("noisy neighbour")
    noisy_group.add_argument("--noisy", action="store_true", help="live streams plus bursting clients")
    noisy_group.add_argument("--bursters", type=int, default=30, help="bursting clients (default 30)")
    noisy_group.add_argument("--warm", type=float, default=10.0, help="seconds of live streams alone first (default 10)")
    noisy_group.add_argument("--burst-for", type=float, default=20.0, help="seconds each burster sends (default 20)")
    noisy_group.add_argument("--settle", type=float, default=30.0,
                             help="seconds of live streams after the bursts, then RSS is read (default 30)")
    noisy_group.add_argument("--burst-seconds", type=float, default=10.0,
                             help="the server's burst allowance, spent at once (default 10, the server's default)")
    noisy_group.add_argument("--max-speed", type=float, default=2.0,
                             help="the server's fastest speed allowed (default 2, the server's default)")
    soak_group = p.add_argument_group("soak")
    soak_group.add_argument("--minutes", type=float, help="run the first --streams count this long")
    soak_group.add_argument("--every", type=float, default=60.0, help="seconds between soak reports (default 60)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    pcm = (np.clip(speech_loop(), -1, 1) * 32767).astype("<i2").tobytes()
    if args.noisy:
        results = noisy(args, pcm)
    elif args.minutes:
        results = soak(args, pcm)
    else:
        results = capacity(args, pcm)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.profile and args.profile.endswith(".txt"):
        print(summarise_profile(args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
