"""Protocol fuzzing: hypothesis throws random frames, JSON of the wrong types, bytes and
orders at /v1/stream and /v1/twilio of one real server, while a healthy stream goes on.

Every connection must end with a documented close code and a reason, the server must log
no traceback, and the healthy stream must get every one of its windows scored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from urllib.parse import urlencode

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .stream_support import HealthyStream, expected_windows, running_server

DOCUMENTED_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013}
FRAME_LIMIT = 4096
# a few seconds in all: each example is one connection to the running server
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
frames = st.one_of(
    st.binary(max_size=700),
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.just('{"type": "end"}'),
    st.just(bytes(FRAME_LIMIT + 1)),  # over the limit
)


def _corrupted(message: dict, fields: list[tuple[str, ...]]):
    """``message`` with one of its ``fields`` (a path of keys) set to JSON of any type."""

    def corrupt(choice):
        path, value = choice
        copy = json.loads(json.dumps(message))
        parent = copy
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        return json.dumps(copy)

    return st.tuples(st.sampled_from(fields), json_values).map(corrupt)


# real Twilio messages, and the same with one field of the wrong type
START = {"event": "start", "streamSid": "MZfuzz", "start": {
    "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
MEDIA = {"event": "media", "streamSid": "MZfuzz", "media": {"track": "inbound", "payload": "f39/fw=="}}
VALID_START = json.dumps(START)
start_messages = st.one_of(st.just(VALID_START), _corrupted(START, [
    ("streamSid",), ("start",), ("start", "tracks"), ("start", "mediaFormat"), ("start", "mediaFormat", "encoding"),
    ("start", "mediaFormat", "sampleRate"), ("start", "mediaFormat", "channels")]))
media_messages = st.one_of(st.just(json.dumps(MEDIA)), _corrupted(MEDIA, [
    ("streamSid",), ("media",), ("media", "track"), ("media", "payload")]))
other_messages = st.sampled_from(["connected", "start", "mark", "dtmf", "stop"]).map(
    lambda event: json.dumps({"event": event, "streamSid": "MZfuzz"}))
twilio_messages = st.one_of(media_messages, other_messages, frames)


class _Background:
    """An event loop in a thread for the server and the healthy stream; hypothesis's
    examples run their clients on the test's own thread meanwhile."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _close_of(url: str, sends: list, last: str) -> tuple[int, str]:
    """Send each frame, then ``last``; the server's close code and reason."""
    async with connect(url, max_size=None) as ws:
        try:
            for item in [*sends, last]:
                await ws.send(item)
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        return ws.close_code, ws.close_reason


def test_random_protocol_input_closes_cleanly_while_a_healthy_stream_scores(tiny_onnx_model, clean_speech):
    records = _Records()
    logging.getLogger().addHandler(records)
    background = _Background()
    context = running_server(tiny_onnx_model, max_frame_bytes=FRAME_LIMIT)
    server = background.call(context.__aenter__())
    healthy = HealthyStream(server, np.tile(clean_speech, 20), speed=5.0)
    streaming = asyncio.run_coroutine_threadsafe(healthy.run(), background.loop)
    closes = []
    try:
        background.call(asyncio.wait_for(healthy.first_score.wait(), 30))

        @FUZZ
        @given(stream_id=st.none() | st.text(max_size=20) | st.sampled_from(["ok-id", "healthy"]),
               rate=st.none() | st.sampled_from(["16000", "8000", "0", "1e999", "x"]),
               encoding=st.none() | st.sampled_from(["pcm_s16le", "f32le", "mulaw", "opus", ""]),
               channels=st.none() | st.sampled_from(["1", "2", "0", "99"]),
               sends=st.lists(frames, max_size=5))
        def raw_stream(stream_id, rate, encoding, channels, sends):
            query = {k: v for k, v in [("stream_id", stream_id), ("rate", rate), ("encoding", encoding),
                                       ("channels", channels)] if v is not None}
            url = f"{server.ws}/v1/stream?{urlencode(query)}"
            closes.append(("stream", sends, asyncio.run(_close_of(url, sends, '{"type": "end"}'))))

        @FUZZ
        @given(start=start_messages, sends=st.lists(twilio_messages, max_size=5))
        def twilio(start, sends):
            # every call opens with a start, half of them valid, so that media and stop are fuzzed too
            sends = [start, *sends]
            stop = json.dumps({"event": "stop", "streamSid": "MZfuzz"})
            closes.append(("twilio", sends, asyncio.run(_close_of(f"{server.ws}/v1/twilio", sends, stop))))

        raw_stream()
        twilio()
        # still scoring after the fuzzing: a score arrives that was not there before
        background.call(asyncio.wait_for(_next_score(healthy, len(healthy.scores)), 30))
        healthy.stop_sending()
        streaming.result(60)
        dropped = server.engine.windows_dropped
    finally:
        background.call(context.__aexit__(None, None, None))
        background.close()
        logging.getLogger().removeHandler(records)

    for endpoint, sends, (code, reason) in closes:
        assert code in DOCUMENTED_CODES and reason, (endpoint, sends, code, reason)
    assert not [r for r in records.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len(healthy.scores) == expected_windows(healthy.seconds_sent) and dropped == 0


async def _next_score(healthy: HealthyStream, seen: int) -> None:
    while len(healthy.scores) <= seen:
        await asyncio.sleep(0.05)
