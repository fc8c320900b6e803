"""Fair scheduling and back-pressure: real-time windows before catch-up work, and a
client that sends too fast is slowed by TCP instead of filling the server's memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import aiohttp
import numpy as np
import pytest
from jsqa.streaming.engine import Engine
from jsqa.streaming.schedule import DeadlineQueue, StreamClock
from jsqa.streaming.server import Limits, serve

from jsqa.scorer import Scorer

from .stream_support import pcm16, run


class GatedScorer:
    """The real scorer behind a gate the test opens: while it is shut, the model call in
    flight waits and every other window queues, so the test sees the scheduler's order."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.gate = threading.Event()
        self.sample_rate = scorer.sample_rate
        self.window_seconds = scorer.window_seconds
        self.hop_seconds = scorer.hop_seconds
        self.name = scorer.name

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        self.gate.wait()
        return self.scorer.score_windows(windows)


@pytest.fixture(scope="module")
def scorer(tiny_onnx_model):
    return Scorer(tiny_onnx_model)


@contextlib.asynccontextmanager
async def gated_server(scorer, limits: Limits, **engine_options):
    gated = GatedScorer(scorer)
    try:
        async with Engine(gated, **engine_options) as engine, serve(engine, "127.0.0.1", 0, limits=limits) as (h, p):
            yield gated, f"http://{h}:{p}", f"ws://{h}:{p}"
    finally:
        gated.gate.set()  # never leave the scoring thread waiting


async def _stream_seconds(http: str, stream_id: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/v1/streams") as r:
        streams = (await r.json())["streams"]
    return next((s["duration_s"] for s in streams if s["stream_id"] == stream_id), 0.0)


async def _until_received(http: str, stream_id: str, seconds: float) -> None:
    while await _stream_seconds(http, stream_id) < seconds:
        await asyncio.sleep(0.02)


def test_a_real_time_window_is_taken_before_a_burst_queued_earlier():
    queue: DeadlineQueue[tuple[str, float]] = DeadlineQueue()
    live, burst = StreamClock(16000), StreamClock(16000)
    # a live call sends 100 ms frames as they are spoken; its first window completes at t=3 s
    for i in range(30):
        live.arrive(0.1 * (i + 1), 1600)
    # at t=2.5 s another client spends a burst: 10 s of audio at once, 8 windows complete
    burst.arrive(2.5, 160_000)
    for end in range(48_000, 160_001, 16_000):
        queue.put(burst.due(end), ("burst", end / 16000))
    queue.put(live.due(48_000), ("live", 3.0))
    # at t=3 s only the live window is due within a hop, though it was queued last
    assert queue.take(32, due_by=4.0) == [("live", 3.0)]
    # the live call goes on; the burst is served as a real-time stream would be, no sooner
    for i in range(30, 70):
        live.arrive(0.1 * (i + 1), 1600)
        if (i + 1) % 10 == 0:
            queue.put(live.due((i + 1) * 1600), ("live", (i + 1) / 10))
    order = queue.take(100)
    assert order[:4] == [("live", 4.0), ("live", 5.0), ("burst", 3.0), ("live", 6.0)]
    assert [t for name, t in order if name == "burst"] == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]


def test_a_paused_stream_earns_no_credit():
    clock = StreamClock(16000)
    clock.arrive(0.0, 16_000)
    clock.arrive(60.0, 60 * 16_000)  # silent for a minute, then a minute of audio at once
    assert clock.due(16_000 + 48_000) == 63.0  # due as if played from now, not a minute ago


def test_queue_drops_the_earliest_matching_item():
    queue: DeadlineQueue[str] = DeadlineQueue()
    for deadline, name in [(3.0, "file"), (1.0, "file-early"), (2.0, "live"), (4.0, "live-late")]:
        queue.put(deadline, name)
    assert queue.remove_earliest(lambda n: n.startswith("live")) == "live"
    assert queue.remove_earliest(lambda n: n == "none") is None
    assert queue.take(10) == ["file-early", "file", "live-late"]


def test_push_waits_while_the_stream_backlog_is_over_its_bound(scorer, clean_speech):
    async def scenario():
        gated = GatedScorer(scorer)
        try:
            async with Engine(gated, max_backlog_seconds=2.0) as engine:
                engine.open_stream("fast")
                await engine.push("fast", clean_speech[: 16000 * 8])  # 6 windows wait for the model
                later = asyncio.create_task(engine.push("fast", clean_speech[16000 * 8 : 16000 * 9]))
                for _ in range(50):
                    await asyncio.sleep(0)
                waited = not later.done()
                gated.gate.set()
                await later
                engine.end_stream("fast")
                await engine.drain()
                return waited, engine.windows_scored, engine.windows_dropped
        finally:
            gated.gate.set()

    waited, scored, dropped = asyncio.run(scenario())
    assert waited
    assert (scored, dropped) == (7, 0)  # windows ending at 3..9 s: waiting lost nothing


def test_server_scores_a_real_time_window_before_a_bursting_streams(scorer, clean_speech):
    """With the model busy, a burst queues 6 windows; a live call's window that completes
    after them is scored next, not after them."""
    live_audio, burst_audio = clean_speech[: 16000 * 3], clean_speech[16000 : 16000 * 9]

    async def scenario():
        async with gated_server(scorer, Limits(burst_seconds=30.0)) as (gated, http, ws_url), \
                aiohttp.ClientSession() as session:
            watch = await session.ws_connect(f"{ws_url}/v1/subscribe")
            live = await session.ws_connect(f"{ws_url}/v1/stream?stream_id=live")
            burst = await session.ws_connect(f"{ws_url}/v1/stream?stream_id=burst")
            await live.send_bytes(pcm16(live_audio[: 16000 * 3 - 1600]))  # 2.9 s: no window yet
            for i in range(0, len(burst_audio), 16000):
                await burst.send_bytes(pcm16(burst_audio[i : i + 16000]))
            await _until_received(http, "burst", 8.0)
            await live.send_bytes(pcm16(live_audio[-1600:]))  # its first window completes now
            await _until_received(http, "live", 3.0)
            gated.gate.set()
            scored = []
            while len(scored) < 7:
                event = json.loads((await watch.receive()).data)
                if event["type"] == "score":
                    scored.append((event["stream_id"], event["t_end"]))
            for ws in (live, burst, watch):
                await ws.close()
            return scored

    scored = run(scenario())
    # the burst's first window was already in the model call when the live one arrived
    assert scored[:2] == [("burst", 3.0), ("live", 3.0)]
    assert [t for name, t in scored if name == "burst"] == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def test_server_stops_reading_a_client_past_its_backlog(scorer, clean_speech):
    """With the model stalled, a client pushing a quarter of an hour of audio gets a few
    seconds of it into the server; the rest waits in TCP and the client's send blocks."""
    second = pcm16(clean_speech[:16000])
    frames = 900

    async def scenario():
        limits = Limits(burst_seconds=3600.0)
        async with gated_server(scorer, limits, max_backlog_seconds=4.0) as (gated, http, ws_url), \
                aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{ws_url}/v1/stream?stream_id=flood")
            sent = 0

            async def flood():
                nonlocal sent
                for _ in range(frames):
                    await ws.send_bytes(second)
                    sent += 1

            sender = asyncio.create_task(flood())
            # wait until the sender stalls (or finishes, which back-pressure should prevent)
            last, still = -1, 0
            while still < 10 and not sender.done():
                await asyncio.sleep(0.1)
                still, last = (still + 1, last) if sent == last else (0, sent)
            finished = sender.done()
            held = await _stream_seconds(http, "flood")
            gated.gate.set()
            sender.cancel()
            ws._response.connection.transport.abort()
            return finished, sent, held

    finished, sent, held = run(scenario())
    assert not finished
    # 4 s of backlog plus the window being scored and the frame that crossed the bound
    assert held <= 4.0 + 3.0 + 2.0
    assert sent > 2 * held  # the client got further only into socket buffers
