"""A Twilio Media Streams call replayed from a real recording, mu-law encoded with the
project's G.711 code, against a real server."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
from websockets.asyncio.client import connect

from jsqa.audio import resample
from jsqa.g711 import mulaw_decode, mulaw_encode
from jsqa.scorer import Scorer

from .stream_support import HealthyStream, expected_windows, run, running_server

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"


def twilio_messages(audio16k: np.ndarray, tracks=("inbound",)) -> tuple[list[str], np.ndarray]:
    """The messages Twilio would send for this call (20 ms media chunks), and its mu-law codes."""
    codes = mulaw_encode(resample(audio16k, 16000, 8000))
    messages = [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": SID,
            "start": {"accountSid": "AC00", "streamSid": SID, "callSid": "CA00", "tracks": list(tracks),
                      "customParameters": {},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }),
    ]
    for n, i in enumerate(range(0, len(codes), 160)):
        for track in tracks:
            messages.append(json.dumps({
                "event": "media", "sequenceNumber": str(len(messages)), "streamSid": SID,
                "media": {"track": track, "chunk": str(n + 1), "timestamp": str(n * 20),
                          "payload": base64.b64encode(codes[i : i + 160].tobytes()).decode()},
            }))
        if n == 100:
            messages.append(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "greeting"}}))
    messages.append(json.dumps({"event": "stop", "sequenceNumber": str(len(messages)), "streamSid": SID,
                                "stop": {"accountSid": "AC00", "callSid": "CA00"}}))
    return messages, codes


async def _call(server, messages, stream_ids, pace=0.0005):
    """Replay a call while subscribers collect its streams' events; returns them and the close."""
    collected = {sid: [] for sid in stream_ids}
    subscribed = []

    async def subscribe(sid, ready):
        async with connect(f"{server.ws}/v1/subscribe?stream_id={sid}") as ws:
            ready.set()
            async for text in ws:
                collected[sid].append(json.loads(text))
                if collected[sid][-1]["type"] == "stream_ended":
                    return

    for sid in stream_ids:
        ready = asyncio.Event()
        subscribed.append(asyncio.create_task(subscribe(sid, ready)))
        await ready.wait()
    async with connect(f"{server.ws}/v1/twilio") as ws:
        for message in messages:
            await ws.send(message)
            await asyncio.sleep(pace)
        await ws.wait_closed()
        close = (ws.close_code, ws.close_reason)
    await asyncio.gather(*subscribed)
    return collected, close


def test_twilio_call_is_scored_like_the_decoded_audio(tiny_onnx_model, clean_speech):
    messages, codes = twilio_messages(clean_speech)

    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            healthy = HealthyStream(server, clean_speech)
            task = asyncio.create_task(healthy.run())
            collected, close = await _call(server, messages, [SID])
            await task
            return collected[SID], close, healthy

    events, close, healthy = run(scenario())
    assert close == (1000, "call stopped")
    assert events[0]["type"] == "stream_started" and events[0]["source"] == "twilio"
    scores = [e for e in events if e["type"] == "score"]
    assert len(scores) == expected_windows(len(codes) / 8000)
    assert events[-1]["type"] == "stream_ended" and events[-1]["reason"] == "stop"
    assert events[-1]["duration_s"] == len(codes) / 8000
    # the same call decoded in one piece and scored directly
    decoded = resample(mulaw_decode(codes), 8000, 16000)
    direct = Scorer(tiny_onnx_model).score_windows(
        np.stack([decoded[int(e["t_start"] * 16000) : int(e["t_end"] * 16000)] for e in scores[:-1]])
    )
    np.testing.assert_allclose([e["mos"] for e in scores[:-1]], direct, atol=0.05)
    assert len(healthy.scores) == expected_windows(14.84)


def test_twilio_both_tracks_become_two_streams(tiny_onnx_model, clean_speech):
    messages, _ = twilio_messages(clean_speech[: 16000 * 5], tracks=("inbound", "outbound"))

    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            collected, close = await _call(server, messages, [SID, f"{SID}:outbound"])
            return collected, close

    collected, close = run(scenario())
    assert close[0] == 1000
    inbound = [e["mos"] for e in collected[SID] if e["type"] == "score"]
    outbound = [e["mos"] for e in collected[f"{SID}:outbound"] if e["type"] == "score"]
    assert len(inbound) == 3 and inbound == outbound  # both tracks carried the same audio


def _start(**media_format) -> dict:
    return {"event": "start", "streamSid": "MZ1",
            "start": {"streamSid": "MZ1", "tracks": ["inbound"], "mediaFormat": media_format}}


GOOD_START = _start(encoding="audio/x-mulaw", sampleRate=8000, channels=1)

# each call: its messages, the close code and a part of the reason the server must give
CONFUSED = {
    "mediaFormat a string": ([{**_start(), "start": {"mediaFormat": "audio/x-mulaw"}}], 1007, "mediaFormat"),
    "encoding a list": ([_start(encoding=["audio/x-mulaw"])], 1003, "unsupported media encoding"),
    "sampleRate overflows": (['{"event":"start","streamSid":"MZ1","start":{"mediaFormat":{"sampleRate":1e999}}}'],
                             1007, "sampleRate"),
    "sampleRate a bool": ([_start(sampleRate=True)], 1007, "sampleRate"),
    "track a list": ([GOOD_START, {"event": "media", "streamSid": "MZ1",
                                   "media": {"track": ["inbound"], "payload": "AAAA"}}], 1007, "track"),
    "deep nesting": (["[" * 100_000], 1007, "invalid JSON"),
    "screen-clearing streamSid": ([{**GOOD_START, "streamSid": "MZ\u001b[2J\u001b[H"}], 1007, "streamSid"),
    "title-setting streamSid": ([{**GOOD_START, "streamSid": "\u001b]0;title\u0007"}], 1007, "streamSid"),
}


def test_type_confused_messages_close_with_a_reason_and_no_traceback(tiny_onnx_model, caplog):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            closes = {}
            for case, (messages, _, _) in CONFUSED.items():
                async with connect(f"{server.ws}/v1/twilio") as ws:
                    for message in messages:
                        await ws.send(message if isinstance(message, str) else json.dumps(message))
                    await ws.wait_closed()
                    closes[case] = (ws.close_code, ws.close_reason)
            return closes, server.engine.streams_total

    closes, opened = run(scenario())
    for case, (_, code, reason) in CONFUSED.items():
        assert closes[case][0] == code and reason in closes[case][1], case
    assert opened == 1  # only the call with a good start opened a stream; no hostile id ever did
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
