"""Idle connections are reaped: a stream that sends no audio, and an HTTP connection that
sends no request, are closed without anyone's token or help."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .stream_support import pcm16, run, running_server

MONITOR = [sys.executable, "-m", "jsqa.streaming"]
TWILIO_START = json.dumps({"event": "start", "streamSid": "MZidle", "start": {
    "streamSid": "MZidle", "tracks": ["inbound"],
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


async def _closed_by_server(url: str, send=()) -> tuple[int, str]:
    async with connect(url) as ws:
        for item in send:
            await ws.send(item)
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            return e.rcvd.code, e.rcvd.reason


def test_streams_without_audio_are_closed_and_a_talking_one_is_not(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model, idle_timeout=1.0) as server:
            async with aiohttp.ClientSession() as session:
                watch = await session.ws_connect(f"{server.ws}/v1/subscribe")
                talking = await session.ws_connect(f"{server.ws}/v1/stream?stream_id=talking")

                async def talk():
                    # three times the idle timeout, in 100 ms frames sent as they are spoken
                    for i in range(0, 16000 * 3, 1600):
                        await talking.send_bytes(pcm16(clean_speech[i : i + 1600]))
                        await asyncio.sleep(0.1)
                    await talking.send_str('{"type": "end"}')
                    async for _ in talking:
                        pass
                    return talking.close_code

                talker = asyncio.create_task(talk())
                silent = await _closed_by_server(f"{server.ws}/v1/stream?stream_id=silent")
                stopped = await _closed_by_server(
                    f"{server.ws}/v1/stream?stream_id=stopped", [pcm16(clean_speech[:8000])])
                call = await _closed_by_server(f"{server.ws}/v1/twilio", [TWILIO_START])
                talked = await talker
                ended = {}
                while len(ended) < 4:
                    event = json.loads((await watch.receive()).data)
                    if event["type"] == "stream_ended":
                        ended[event["stream_id"]] = event["reason"]
                await watch.close()
                async with session.get(f"{server.http}/v1/streams") as r:
                    active = (await r.json())["streams"]
            return silent, stopped, call, talked, ended, active

    silent, stopped, call, talked, ended, active = run(scenario())
    assert silent == stopped == call == (1008, "idle: no audio for 1 s")
    assert talked == 1000
    assert ended == {"silent": "idle: no audio for 1 s", "stopped": "idle: no audio for 1 s",
                     "MZidle": "idle: no audio for 1 s", "talking": "end"}
    assert active == []


def test_a_connection_that_sends_no_request_is_closed(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model, request_timeout=0.5) as server:
            host, port = server.http.removeprefix("http://").split(":")
            silent_reader, _ = await asyncio.open_connection(host, int(port))
            partial_reader, partial_writer = await asyncio.open_connection(host, int(port))
            partial_writer.write(b"GET /v1/streams HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            # the server closes both: each read then ends (the guard only stops a hang)
            return await asyncio.wait_for(asyncio.gather(silent_reader.read(), partial_reader.read()), 20)

    assert run(scenario()) == [b"", b""]


def test_monitor_idle_timeout_flag(tiny_onnx_model):
    proc = subprocess.Popen(
        MONITOR + ["--listen", "127.0.0.1:0", "--model", str(tiny_onnx_model), "--idle-timeout", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", proc.stderr.readline()).group(1))
        closed = run(_closed_by_server(f"ws://127.0.0.1:{port}/v1/stream?stream_id=quiet"))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert closed == (1008, "idle: no audio for 0.5 s")
