"""CPU share of the dashboard while N streams of synthetic score events flow in real time.

Each stream publishes one window a second (the default hop). The dashboard draws into a
real terminal-sized console that writes to /dev/null, so all rendering work happens. The
same event feed is first drained without a dashboard; the difference is the dashboard's.

    python bench/dashboard_cpu.py --streams 50 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

from jsqa.streaming.dashboard import run_dashboard
from rich.console import Console


async def synthetic_events(streams: int, seconds: float, seed: int = 0):
    """``streams`` calls, each scoring one window per second, with a dip in the middle."""
    rng = random.Random(seed)
    ids = [f"call-{i:03d}" for i in range(streams)]
    base = {sid: rng.uniform(1.5, 4.6) for sid in ids}
    smoothed = dict(base)
    for sid in ids:
        yield {"type": "stream_started", "stream_id": sid, "source": "synthetic"}
    start = time.monotonic()
    for tick in range(int(seconds)):
        for i, sid in enumerate(ids):
            # Spread each second's windows over the second, as real streams would arrive.
            await asyncio.sleep(max(0.0, start + tick + i / streams - time.monotonic()))
            mos = min(5.0, max(1.0, base[sid] + rng.gauss(0, 0.3)))
            smoothed[sid] = 0.7 * smoothed[sid] + 0.3 * mos
            yield {
                "type": "score", "stream_id": sid, "t_start": tick, "t_end": tick + 3.0,
                "mos": mos, "mos_smoothed": smoothed[sid], "speech_ratio": rng.uniform(0.4, 0.9),
                "level_dbfs": rng.uniform(-35, -15), "clipping_ratio": 0.0,
                "latency_ms": rng.lognormvariate(3.0, 0.5), "no_speech": False,
            }


async def drain(events) -> None:
    async for _ in events:
        pass


def cpu_share(coro) -> tuple[float, float]:
    """(CPU seconds / wall seconds, wall seconds) of running ``coro``."""
    wall, cpu = time.monotonic(), time.process_time()
    asyncio.run(coro)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return cpu / wall, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run (default 30)")
    parser.add_argument("--width", type=int, default=160, help="terminal columns (default 160)")
    parser.add_argument("--height", type=int, default=60, help="terminal rows (default 60)")
    args = parser.parse_args()

    feed, _ = cpu_share(drain(synthetic_events(args.streams, args.seconds)))
    with open(os.devnull, "w") as sink:
        console = Console(file=sink, force_terminal=True, width=args.width, height=args.height)
        total, wall = cpu_share(
            run_dashboard(synthetic_events(args.streams, args.seconds), model_name="synthetic",
                          single_stream=False, console=console)
        )
    print(f"{args.streams} streams, {args.streams / 1.0:.0f} windows/s, {wall:.0f} s, "
          f"{args.width}x{args.height} terminal")
    print(f"event feed alone:      {feed:6.1%} of one core")
    print(f"feed + dashboard:      {total:6.1%} of one core")
    print(f"dashboard share:       {total - feed:6.1%} of one core")


if __name__ == "__main__":
    main()
