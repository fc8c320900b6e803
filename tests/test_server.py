"""The WebSocket server, end to end: a real aiohttp server on 127.0.0.1, real clients
(aiohttp's and the independent ``websockets`` library), real speech and a real model."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from jsqa.scorer import Scorer

from .stream_support import HealthyStream, expected_windows, pcm16, run, running_server

SECONDS = 14.84  # the clean_speech recording


async def _ws_close(url: str, send=(), headers=None) -> tuple[int, str]:
    """With the websockets library: connect, send each item, return the server's close."""
    async with connect(url, additional_headers=headers or {}) as ws:
        try:
            for item in send:
                await ws.send(item)
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            return e.rcvd.code, e.rcvd.reason


async def _aiohttp_close(url: str, send=()) -> tuple[int, str]:
    """With aiohttp's client: the same."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for item in send:
            await (ws.send_bytes(item) if isinstance(item, bytes) else ws.send_str(item))
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code, (msg.extra or "")


def _twilio(event: str, **fields) -> str:
    return json.dumps({"event": event, **fields})


START = _twilio("start", streamSid="MZbad", start={"streamSid": "MZbad", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}})

BAD_INPUTS = {
    "odd byte count": (_ws_close, "/v1/stream?stream_id=odd", [b"\x00\x01\x02"], 1007, "not a whole number"),
    "unknown encoding": (_aiohttp_close, "/v1/stream?encoding=opus", [], 1003, "unknown encoding 'opus'"),
    "unknown rate": (_ws_close, "/v1/stream?rate=12345", [], 1003, "unsupported rate 12345"),
    "invalid json": (_aiohttp_close, "/v1/stream?stream_id=j", ["{not json"], 1007, "invalid JSON"),
    "unknown control": (_ws_close, "/v1/stream?stream_id=c", ['{"type": "pause"}'], 1003, "only text message"),
    "oversize frame": (_aiohttp_close, "/v1/stream?stream_id=big", [bytes(64 * 1024 + 2)], 1009, "exceeds the limit"),
    "faster than real time": (_ws_close, "/v1/stream?stream_id=fast", [bytes(32000)] * 8, 1008, "faster than 50x"),
    "duplicate stream id": (_ws_close, "/v1/stream?stream_id=healthy", [], 1008, "already streaming"),
    "twilio invalid json": (_ws_close, "/v1/twilio", ["{]"], 1007, "invalid JSON"),
    "twilio media before start": (
        _ws_close, "/v1/twilio", [_twilio("connected"), _twilio("media", media={"payload": "AAAA"})],
        1008, "'media' before 'start'"),
    "twilio second start": (_aiohttp_close, "/v1/twilio", [START, START], 1008, "a second 'start'"),
    "twilio bad base64": (
        _ws_close, "/v1/twilio", [START, _twilio("media", streamSid="MZbad", media={"payload": "!!"})],
        1007, "not valid base64"),
    "twilio binary frame": (_ws_close, "/v1/twilio", [b"\x00"], 1003, "binary frames"),
    "twilio unknown encoding": (
        _ws_close, "/v1/twilio", [START.replace("audio/x-mulaw", "audio/opus")], 1003, "unsupported media encoding"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_closes_only_that_connection(case, tiny_onnx_model, clean_speech):
    client, path, send, code, reason = BAD_INPUTS[case]

    async def scenario():
        async with running_server(tiny_onnx_model, max_frame_bytes=64 * 1024) as server:
            healthy = HealthyStream(server, clean_speech, speed=20.0)
            task = asyncio.create_task(healthy.run())
            await healthy.first_score.wait()
            closed = await client(server.ws + path, send)
            closed_at = time.monotonic()
            await task
            return closed, closed_at, healthy, server.engine

    closed, closed_at, healthy, engine = run(scenario())
    assert closed[0] == code
    assert reason in closed[1]
    # the healthy stream got every window, including ones after the bad connection closed
    assert len(healthy.scores) == expected_windows(SECONDS)
    assert any(t > closed_at and e["type"] == "score" for t, e in healthy.events)
    assert healthy.events[-1][1]["type"] == "stream_ended" and healthy.close_code == 1000
    assert engine.windows_dropped == 0


def test_twilio_media_after_stop_and_sample_rate_are_checked(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            after_stop = await _ws_close(server.ws + "/v1/twilio", [START, _twilio("stop", streamSid="MZbad")])
            late = await _aiohttp_close(
                server.ws + "/v1/twilio",
                [START.replace("MZbad", "MZlate"), _twilio("stop", streamSid="MZlate"), _twilio("media")],
            )
            rate = await _ws_close(server.ws + "/v1/twilio", [START.replace("8000", "7000")])
            return after_stop, late, rate

    after_stop, late, rate = run(scenario())
    assert after_stop == (1000, "call stopped")
    assert late == (1000, "call stopped")  # the server closed at 'stop'; later messages go nowhere
    assert rate[0] == 1003 and "unsupported rate 7000" in rate[1]


def test_abrupt_disconnect_mid_window_ends_the_stream(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"{server.ws}/v1/subscribe") as sub:
                healthy = HealthyStream(server, clean_speech)
                task = asyncio.create_task(healthy.run())
                await healthy.first_score.wait()
                ws = await session.ws_connect(f"{server.ws}/v1/stream?stream_id=cut")
                await ws.send_bytes(pcm16(clean_speech[: 16000 * 4 + 8000]))  # 4.5 s: mid-window
                await asyncio.sleep(0.2)
                ws._response.connection.transport.abort()  # no close frame: the TCP link just dies
                cut = []
                async for msg in sub:
                    event = json.loads(msg.data)
                    if event.get("stream_id") == "cut":
                        cut.append(event)
                        if event["type"] == "stream_ended":
                            break
                await task
                async with session.get(f"{server.http}/v1/streams") as r:
                    active = await r.json()
                return cut, healthy, active

    cut, healthy, active = run(scenario())
    assert cut[0]["type"] == "stream_started"
    assert cut[-1]["type"] == "stream_ended" and cut[-1]["reason"] == "disconnected"
    assert cut[-1]["windows"] == 3  # windows ending at 3 s and 4 s, then the tail ending at 4.5 s
    assert len(healthy.scores) == expected_windows(SECONDS)
    assert active["streams"] == []


def test_token_is_required_everywhere_but_healthz(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model, token="s3cret") as server:
            healthy = HealthyStream(server, clean_speech, token="s3cret")
            task = asyncio.create_task(healthy.run())
            await healthy.first_score.wait()
            results = {}
            async with aiohttp.ClientSession() as session:
                for path in ("/healthz", "/metrics", "/v1/streams", "/metrics?token=wrong", "/metrics?token=s3cret"):
                    async with session.get(server.http + path) as r:
                        results[path] = r.status
                async with session.get(server.http + "/v1/streams", headers={"Authorization": "Bearer s3cret"}) as r:
                    results["bearer"] = r.status
            results["ws no token"] = await _ws_close(server.ws + "/v1/stream?stream_id=x")
            results["ws bad token"] = await _ws_close(server.ws + "/v1/subscribe?token=nope")
            results["ws bad bearer"] = await _ws_close(
                server.ws + "/v1/twilio", headers={"Authorization": "Bearer nope"})
            await task
            return results, healthy

    results, healthy = run(scenario())
    assert results["/healthz"] == 200
    assert results["/metrics"] == results["/v1/streams"] == results["/metrics?token=wrong"] == 401
    assert results["/metrics?token=s3cret"] == results["bearer"] == 200
    for key in ("ws no token", "ws bad token", "ws bad bearer"):
        assert results[key][0] == 1008 and "unauthorized" in results[key][1]
    assert len(healthy.scores) == expected_windows(SECONDS)


def test_stream_limit_closes_the_extra_stream_only(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model, max_streams=1) as server:
            healthy = HealthyStream(server, clean_speech)
            task = asyncio.create_task(healthy.run())
            await healthy.first_score.wait()
            extra = await _ws_close(server.ws + "/v1/stream?stream_id=extra")
            await task
            return extra, healthy

    extra, healthy = run(scenario())
    assert extra[0] == 1013 and "limit of 1 streams" in extra[1]
    assert len(healthy.scores) == expected_windows(SECONDS)


def test_websockets_client_streams_48k_stereo_float(tiny_onnx_model, clean_speech):
    """An independent client sending f32le 48 kHz stereo gets the same scores as 16 kHz mono."""
    from jsqa.audio import resample

    x = clean_speech[: 16000 * 6]
    stereo = np.stack([resample(x, 16000, 48000)] * 2, axis=1).astype("<f4")

    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            url = f"{server.ws}/v1/stream?stream_id=st&rate=48000&encoding=f32le&channels=2"
            events = []
            async with connect(url) as ws:
                for i in range(0, len(stereo), 4800):
                    await ws.send(stereo[i : i + 4800].tobytes())
                    await asyncio.sleep(0.01)
                await ws.send(json.dumps({"type": "end"}))
                async for text in ws:
                    events.append(json.loads(text))
            return events

    events = run(scenario())
    scores = [e for e in events if e["type"] == "score"]
    assert [e["t_end"] for e in scores] == [3.0, 4.0, 5.0, 6.0]
    direct = Scorer(tiny_onnx_model).score_windows(np.stack([x[s * 16000 : s * 16000 + 48000] for s in range(4)]))
    # the resampled round trip changes the audio a little, the scores barely
    np.testing.assert_allclose([e["mos"] for e in scores], direct, atol=0.1)
    assert events[-1]["type"] == "stream_ended"


def test_metrics_and_streams_report_live_figures(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{server.ws}/v1/stream?stream_id=live")
                await ws.send_bytes(pcm16(clean_speech[: 16000 * 4]))
                latest = None
                while latest is None or latest["t_end"] < 4.0:
                    event = json.loads((await ws.receive()).data)
                    latest = event if event["type"] == "score" else latest
                async with session.get(f"{server.http}/metrics") as r:
                    during = (r.headers["Content-Type"], await r.text())
                async with session.get(f"{server.http}/v1/streams") as r:
                    streams = await r.json()
                await ws.send_str('{"type": "end"}')
                async for _ in ws:
                    pass
                async with session.get(f"{server.http}/metrics") as r:
                    after = await r.text()
            return latest, during, streams, after

    latest, (content_type, during), streams, after = run(scenario())
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(during)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("jsqa_streams_active", ())] == 1
    assert samples[("jsqa_stream_mos", (("stream_id", "live"),))] == pytest.approx(latest["mos"])
    assert samples[("jsqa_stream_mos_smoothed", (("stream_id", "live"),))] == pytest.approx(latest["mos_smoothed"])
    assert samples[("jsqa_windows_scored_total", ())] == 2
    assert families["jsqa_score_latency_seconds"].type == "histogram"
    assert samples[("jsqa_score_latency_seconds_count", ())] == 2
    assert samples[("jsqa_score_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    [live] = streams["streams"]
    assert live["stream_id"] == "live" and live["mos"] == pytest.approx(latest["mos"])
    assert streams["stats"]["active_streams"] == 1
    after_samples = {s.name: s.value for f in text_string_to_metric_families(after) for s in f.samples if not s.labels}
    assert after_samples["jsqa_streams_active"] == 0 and after_samples["jsqa_streams_total"] == 1
    assert after_samples["jsqa_windows_scored_total"] == 2  # 4 s ends on a hop: no tail window


def test_subscribers_get_their_streams_events(tiny_onnx_model, clean_speech):
    async def collect(url, out, ready):
        async with connect(url) as ws:
            ready.set()
            async for text in ws:
                out.append(json.loads(text))

    async def scenario():
        async with running_server(tiny_onnx_model, engine_options={"stats_interval": 0.2}) as server:
            only_a, everything = [], []
            ready = [asyncio.Event(), asyncio.Event()]
            subs = [asyncio.create_task(collect(f"{server.ws}/v1/subscribe?stream_id=a", only_a, ready[0])),
                    asyncio.create_task(collect(f"{server.ws}/v1/subscribe", everything, ready[1]))]
            await asyncio.gather(*(r.wait() for r in ready))
            a = HealthyStream(server, clean_speech[: 16000 * 5], stream_id="a")
            b = HealthyStream(server, clean_speech[: 16000 * 5], stream_id="b")
            await asyncio.gather(a.run(), b.run())
            await asyncio.sleep(0.3)
            for task in subs:
                task.cancel()
            await asyncio.gather(*subs, return_exceptions=True)
            return only_a, everything, a

    only_a, everything, a = run(scenario())
    assert {e["stream_id"] for e in only_a} == {"a"}
    assert [e for e in only_a if e["type"] == "score"] == a.scores
    assert {e["type"] for e in only_a} == {"stream_started", "score", "stream_ended"}
    assert {e.get("stream_id") for e in everything if e["type"] != "stats"} == {"a", "b"}
    assert any(e["type"] == "stats" and e["model_name"] == "jsqa-tiny" for e in everything)


def test_slow_subscriber_never_slows_scoring(tiny_onnx_model, clean_speech):
    """A subscriber that cannot keep up (it stops reading; its queue holds 4 events) loses
    events, counted in /metrics, while every stream is scored in full and each stream's
    own socket still gets every one of its events."""
    audio = np.concatenate([clean_speech] * 2)

    async def scenario():
        # sent at 40x, the streams are catch-up work; scored 32 windows a call, their events
        # come in bursts larger than the stuck subscriber's queue
        engine_options = {"catchup_batch": 32}
        async with running_server(tiny_onnx_model, subscriber_queue=4, engine_options=engine_options) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            port = int(server.ws.rsplit(":", 1)[1])
            sock.connect(("127.0.0.1", port))
            async with connect(f"{server.ws}/v1/subscribe", sock=sock, max_queue=1) as stuck:
                stuck.transport.pause_reading()  # like a client that has hung
                streams = [HealthyStream(server, audio, stream_id=f"s{i}", speed=40.0) for i in range(4)]
                await asyncio.gather(*(s.run() for s in streams))
                async with aiohttp.ClientSession() as session, session.get(f"{server.http}/metrics") as r:
                    text = await r.text()
                stuck.transport.abort()  # and then it dies without a goodbye
            return streams, text

    streams, text = run(scenario())
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
    for s in streams:
        assert len(s.scores) == expected_windows(2 * SECONDS)
    assert samples["jsqa_windows_dropped_total"] == 0
    assert samples["jsqa_events_dropped_total"] > 0
    assert samples["jsqa_windows_scored_total"] == 4 * expected_windows(2 * SECONDS)


def test_a_stream_id_with_a_trailing_newline_is_refused(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            closed = await _ws_close(server.ws + "/v1/stream?stream_id=trail%0A")
            return closed, server.engine.streams_total

    (code, reason), opened = run(scenario())
    assert code == 1008 and "stream_id must be" in reason
    assert opened == 0


def test_frames_over_aiohttps_own_cap_get_a_reason(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            return await _aiohttp_close(server.ws + "/v1/stream?stream_id=huge", [bytes(1024 * 1024 + 2)])

    code, reason = run(scenario())
    assert (code, reason) == (1009, "frame exceeds the limit of 262144 bytes")


def test_the_bearer_scheme_is_case_insensitive(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model, token="s3cret") as server:
            statuses = {}
            async with aiohttp.ClientSession() as session:
                for scheme in ("bearer", "BEARER", "Bearer"):
                    headers = {"Authorization": f"{scheme} s3cret"}
                    async with session.get(server.http + "/v1/streams", headers=headers) as r:
                        statuses[scheme] = r.status
            return statuses

    assert run(scenario()) == {"bearer": 200, "BEARER": 200, "Bearer": 200}


def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return s.recv(65536)


def test_malformed_http_gets_400_and_one_log_line(tiny_onnx_model, caplog):
    requests = {
        "content-length overflow":
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "8 KiB header": b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n",
    }

    async def scenario():
        async with running_server(tiny_onnx_model, token="s3cret") as server:
            port = int(server.http.rsplit(":", 1)[1])
            loop = asyncio.get_running_loop()
            replies = {k: await loop.run_in_executor(None, _raw_http, port, v) for k, v in requests.items()}
            # header bytes that are not UTF-8 in the token: refused, not a server error
            replies["binary token"] = await loop.run_in_executor(
                None, _raw_http, port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
            return replies

    replies = run(scenario())
    status = {k: v.split(b"\r\n")[0].split(b" ")[1] for k, v in replies.items()}
    assert status == {"content-length overflow": b"400", "8 KiB header": b"400", "binary token": b"401"}
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    lines = [r.getMessage() for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(lines) == 2 and all("\n" not in line for line in lines)


def test_a_stream_socket_gets_its_own_stream_started_first(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            async with connect(f"{server.ws}/v1/stream?stream_id=own") as ws:
                await ws.send(pcm16(clean_speech[: 16000 * 3]))
                await ws.send('{"type": "end"}')
                return [json.loads(text) for text in [m async for m in ws]]

    events = run(scenario())
    assert events[0]["type"] == "stream_started" and events[0]["stream_id"] == "own"
    assert [e["type"] for e in events[1:]] == ["score", "stream_ended"]


def test_the_frame_limit_is_exact_for_compressing_clients(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model, max_frame_bytes=4096) as server:
            # the websockets client offers permessage-deflate: zeros would shrink to a few bytes
            at_limit = await _ws_close(server.ws + "/v1/stream?stream_id=at", [bytes(4096), '{"type": "end"}'])
            over = await _ws_close(server.ws + "/v1/stream?stream_id=over", [bytes(4097)])
            return at_limit, over

    at_limit, over = run(scenario())
    assert at_limit == (1000, "stream ended")
    assert over == (1009, "frame of 4097 bytes exceeds the limit of 4096 bytes")


def test_a_text_frame_that_is_not_utf8_gets_a_reason(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            closes = []
            for path in ("/v1/stream?stream_id=utf", "/v1/twilio"):
                async with connect(server.ws + path) as ws:
                    await ws.send(b"\xff\xfe not UTF-8", text=True)
                    await ws.wait_closed()
                    closes.append((ws.close_code, ws.close_reason))
            return closes

    assert run(scenario()) == [(1007, "text frame is not valid UTF-8")] * 2
