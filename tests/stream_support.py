"""Helpers for the streaming server tests: a real server on 127.0.0.1 and paced clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import aiohttp
import numpy as np
from jsqa.streaming.engine import Engine
from jsqa.streaming.server import Limits, serve

from jsqa.scorer import Scorer

# tests send audio at up to this multiple of real time; the test server allows 50x
TEST_LIMITS = {"max_speed": 50.0, "burst_seconds": 5.0}


@dataclass
class Server:
    engine: Engine
    http: str
    ws: str


@contextlib.asynccontextmanager
async def running_server(model_path, *, token=None, engine_options=None, **limits):
    engine = Engine(Scorer(model_path), **(engine_options or {}))
    async with engine, serve(engine, "127.0.0.1", 0, token=token, limits=Limits(**{**TEST_LIMITS, **limits})) as (host, port):
        yield Server(engine, f"http://{host}:{port}", f"ws://{host}:{port}")


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def expected_windows(seconds: float, window: float = 3.0, hop: float = 1.0) -> int:
    full = int((seconds - window) // hop) + 1
    return full + (1 if (seconds - window) % hop else 0)


class HealthyStream:
    """A well-behaved client streaming speech at ``speed`` x real time over aiohttp,
    recording when each event arrives; ``first_score`` is set on the first score."""

    def __init__(self, server: Server, audio: np.ndarray, stream_id: str = "healthy",
                 speed: float = 10.0, token: str | None = None):
        self.url = f"{server.ws}/v1/stream?stream_id={stream_id}&rate=16000&encoding=pcm_s16le"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.audio = audio
        self.speed = speed
        self.events: list[tuple[float, dict]] = []
        self.first_score = asyncio.Event()
        self.close_code = None
        self.seconds_sent = 0.0
        self._stopped = False

    def stop_sending(self) -> None:
        """End the stream early, after the chunk being sent; safe from any thread."""
        self._stopped = True

    @property
    def scores(self) -> list[dict]:
        return [e for _, e in self.events if e["type"] == "score"]

    async def run(self) -> None:
        async with aiohttp.ClientSession(headers=self.headers) as session:
            async with session.ws_connect(self.url) as ws:
                reader = asyncio.create_task(self._read(ws))
                start = time.monotonic()
                chunk = 1600  # 0.1 s
                for i in range(0, len(self.audio), chunk):
                    if self._stopped:
                        break
                    delay = start + i / 16000 / self.speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send_bytes(pcm16(self.audio[i : i + chunk]))
                    self.seconds_sent += len(self.audio[i : i + chunk]) / 16000
                await ws.send_str(json.dumps({"type": "end"}))
                await reader
                self.close_code = ws.close_code

    async def _read(self, ws) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                self.events.append((time.monotonic(), event))
                if event["type"] == "score":
                    self.first_score.set()


def run(coro, timeout: float = 60.0):
    """``asyncio.run`` with a guard so a broken server fails the test instead of hanging it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
