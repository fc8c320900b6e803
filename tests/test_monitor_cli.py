"""``jsqa-monitor`` as a user runs it: real processes, files, stdin, a server, webhooks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from jsqa.streaming.cli import main as monitor_main
from websockets.asyncio.client import connect

from jsqa.audio import resample
from jsqa.g711 import mulaw_encode

from .stream_support import expected_windows, pcm16, run, running_server

MONITOR = [sys.executable, "-m", "jsqa.streaming"]
# no sound server: PortAudio then sees no input device, whatever the machine has
NO_AUDIO = {**os.environ, "PULSE_SERVER": "unix:/nonexistent", "AUDIODEV": "null"}


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_file_as_json_lines_and_jsonl_copy(tiny_onnx_model, speech_path, tmp_path):
    copy = tmp_path / "events.jsonl"
    done = subprocess.run(
        MONITOR + ["--file", str(speech_path), "--model", str(tiny_onnx_model), "--jsonl", str(copy)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    events = _lines(done.stdout)  # stdout is a pipe: JSON lines, no dashboard
    assert events[0]["type"] == "stream_started" and events[0]["stream_id"] == speech_path.stem
    scores = [e for e in events if e["type"] == "score"]
    assert len(scores) == expected_windows(14.84)
    assert all(1.0 <= e["mos"] <= 5.0 for e in scores)
    assert events[-1]["type"] == "stream_ended" and events[-1]["windows"] == len(scores)
    assert _lines(copy.read_text()) == events


def test_stdin_raw_mulaw(tiny_onnx_model, clean_speech):
    codes = mulaw_encode(resample(clean_speech[: 16000 * 6], 16000, 8000)).tobytes()
    done = subprocess.run(
        MONITOR + ["--file", "-", "--encoding", "mulaw", "--rate", "8000", "--model", str(tiny_onnx_model),
                   "--stream-id", "phone"],
        input=codes, capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    events = _lines(done.stdout.decode())
    assert [e["t_end"] for e in events if e["type"] == "score"] == [3.0, 4.0, 5.0, 6.0]
    assert {e["stream_id"] for e in events} == {"phone"}


def test_demo_runs_through_the_engine(tiny_onnx_model):
    done = subprocess.run(MONITOR + ["--demo", "--no-realtime", "--no-dashboard", "--model", str(tiny_onnx_model)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = _lines(done.stdout)
    assert events[0]["source"] == "demo" and events[-1]["type"] == "stream_ended"
    assert sum(e["type"] == "score" for e in events) >= 10


def test_no_input_device_gives_a_clear_message(tiny_onnx_model):
    listed = subprocess.run(MONITOR + ["--list-devices"], capture_output=True, text=True, env=NO_AUDIO, timeout=30)
    assert listed.returncode == 0
    assert "no audio input device found" in listed.stdout
    mic = subprocess.run(MONITOR + ["--device", "mic", "--model", str(tiny_onnx_model)],
                         capture_output=True, text=True, env=NO_AUDIO, timeout=30)
    assert mic.returncode == 1
    assert "no audio input device found" in mic.stderr and "use --file, --listen or --demo" in mic.stderr
    assert "Traceback" not in mic.stderr


def test_a_missing_model_is_a_one_line_error():
    done = subprocess.run(MONITOR + ["--model", "/nonexistent/model.onnx", "--demo", "--no-dashboard"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "model file not found" in done.stderr and done.stderr.count("\n") == 1


def test_listen_serves_until_interrupted(tiny_onnx_model, clean_speech):
    proc = subprocess.Popen(
        MONITOR + ["--listen", "127.0.0.1:0", "--model", str(tiny_onnx_model), "--token", "tok", "--max-speed", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = proc.stderr.readline()
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", banner).group(1))

        async def client():
            import aiohttp

            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    health = r.status
                async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                    unauthorised = r.status
            events = []
            async with connect(f"ws://127.0.0.1:{port}/v1/stream?stream_id=net&token=tok") as ws:
                for i in range(0, 16000 * 5, 1600):
                    await ws.send(pcm16(clean_speech[i : i + 1600]))
                    await asyncio.sleep(0.01)
                await ws.send('{"type": "end"}')
                async for text in ws:
                    events.append(json.loads(text))
            return health, unauthorised, events

        health, unauthorised, events = run(client())
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert health == 200 and unauthorised == 401
    assert [e["t_end"] for e in events if e["type"] == "score"] == [3.0, 4.0, 5.0]
    assert proc.returncode == 0
    # without a terminal the server also prints the events as JSON lines
    assert [e["type"] for e in _lines(out)][-1] == "stream_ended"


def test_alert_webhook_retries_and_gets_the_alert(tiny_onnx_model, speech_path):
    async def scenario():
        received, attempts = [], []

        async def hook(request):
            attempts.append(1)
            if len(attempts) == 1:
                return web.Response(status=503)  # the first try fails: the monitor must retry
            received.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        proc = await asyncio.create_subprocess_exec(
            *MONITOR, "--file", str(speech_path), "--model", str(tiny_onnx_model),
            "--alert-threshold", "5.0", "--alert-seconds", "2", "--alert-webhook", f"http://127.0.0.1:{port}/hook",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        await runner.cleanup()
        return proc.returncode, out.decode(), err.decode(), received, len(attempts)

    code, out, err, received, attempts = run(scenario())
    assert code == 0, err
    alerts = [e for e in _lines(out) if e["type"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["state"] == "degraded"
    assert received == alerts and attempts == 2


def test_dead_webhook_never_slows_scoring(tiny_onnx_model, speech_path):
    done = subprocess.run(
        MONITOR + ["--file", str(speech_path), "--model", str(tiny_onnx_model), "--alert-threshold", "5",
                   "--alert-seconds", "1", "--alert-webhook", "http://127.0.0.1:9/nothing-listens-here"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0
    events = _lines(done.stdout)
    assert sum(e["type"] == "score" for e in events) == expected_windows(14.84)
    assert "alert webhook http://127.0.0.1:9/nothing-listens-here failed after 4 tries" in done.stderr


def test_connect_prints_a_remote_servers_events(tiny_onnx_model, clean_speech):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            proc = await asyncio.create_subprocess_exec(
                *MONITOR, "--connect", server.ws, "--no-dashboard", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            lines = []
            try:
                while not lines or lines[-1].get("state") != "connected":
                    lines.append(json.loads(await proc.stdout.readline()))
                async with connect(f"{server.ws}/v1/stream?stream_id=far") as ws:
                    await ws.send(pcm16(clean_speech[: 16000 * 4]))
                    await ws.send('{"type": "end"}')
                    await ws.wait_closed()
                while lines[-1].get("type") != "stream_ended":
                    lines.append(json.loads(await proc.stdout.readline()))
            finally:
                proc.send_signal(signal.SIGINT)
                await proc.wait()
            return lines

    lines = run(scenario())
    assert [e["type"] for e in lines if e["type"] in ("score", "stream_ended")] == ["score", "score", "stream_ended"]
    assert all(e["stream_id"] == "far" for e in lines if e["type"] == "score")


@pytest.mark.parametrize("option, value", [
    ("--max-batch", "0"), ("--rate", "0"), ("--channels", "0"), ("--hop", "-1"), ("--hop", "0"),
    ("--alert-seconds", "nan"), ("--alert-threshold", "7"), ("--max-streams", "0"), ("--max-speed", "inf"),
    ("--idle-timeout", "-1"),
])
def test_numeric_options_are_checked_by_the_parser(option, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        monitor_main(["--file", "-", option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.splitlines()[-1].startswith(f"jsqa-monitor: error: argument {option}: {value} is out of range")


@pytest.mark.parametrize("content", [b"", b"hello, I am text in a .wav\n"])
def test_an_unreadable_file_is_a_one_line_error(content, tmp_path, capsys):
    path = tmp_path / "call.wav"
    path.write_bytes(content)
    assert monitor_main(["--file", str(path), "--no-dashboard"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: not a sound file" in err


def test_a_sound_file_without_samples_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)  # a header and nothing else
    assert monitor_main(["--file", str(path), "--no-dashboard"]) == 1
    assert capsys.readouterr().err == f"jsqa-monitor: error: {path}: holds no audio samples\n"


# the real sounddevice, on a machine where it cannot find the PortAudio library
NO_PORTAUDIO = ("import ctypes.util, sys; ctypes.util.find_library = lambda name: None;"
                "from jsqa.streaming.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("args", [[], ["--list-devices"], ["--device", "99"]])
def test_a_missing_portaudio_library_says_what_to_install(args):
    done = subprocess.run([sys.executable, "-c", NO_PORTAUDIO, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "PortAudio library not found" in done.stderr
    assert "apt install libportaudio2" in done.stderr


def _pipeline(command: str) -> str:
    # the monitor's own exit status, not head's
    return f"set -o pipefail; {' '.join(MONITOR)} {command} | head -3"


def test_connect_into_head_exits_quietly(tiny_onnx_model):
    async def scenario():
        async with running_server(tiny_onnx_model) as server:
            port = int(server.ws.rsplit(":", 1)[1])
            results = []
            for url in (server.ws, f"ws://127.0.0.1:{port + 1}"):  # a live server, and nothing listening
                proc = await asyncio.create_subprocess_exec(
                    "bash", "-c", _pipeline(f"--connect {url} --no-dashboard"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                results.append((proc.returncode, out.decode(), err.decode()))
            return results

    for code, out, err in run(scenario()):
        assert code == 0 and err == ""
        assert len(_lines(out)) == 3


def test_a_file_into_head_stops_scoring(tiny_onnx_model, clean_speech, tmp_path):
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([clean_speech] * 4), 16000)  # a minute, played in real time
    began = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", _pipeline(f"--file {long} --realtime --no-dashboard --model {tiny_onnx_model}")],
        capture_output=True, text=True, timeout=50,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert [e["type"] for e in _lines(done.stdout)] == ["stream_started", "score", "score"]
    assert time.monotonic() - began < 20  # not the minute the whole file would take


def test_sigterm_writes_live_streams_summaries_to_jsonl(tiny_onnx_model, clean_speech, tmp_path):
    copy = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        MONITOR + ["--listen", "127.0.0.1:0", "--model", str(tiny_onnx_model), "--jsonl", str(copy),
                   "--no-dashboard", "--max-speed", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", proc.stderr.readline()).group(1))

        async def client():
            async with connect(f"ws://127.0.0.1:{port}/v1/stream?stream_id=live") as ws:
                await ws.send(pcm16(clean_speech[: 16000 * 4]))
                while json.loads(await ws.recv())["type"] != "score":
                    pass
                proc.send_signal(signal.SIGTERM)
                await ws.wait_closed()
                return ws.close_code

        close_code = run(client())
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and close_code == 1001
    ended = [e for e in _lines(copy.read_text()) if e["type"] == "stream_ended"]
    assert [e["stream_id"] for e in ended] == ["live"]


def test_a_hostile_servers_refusal_is_shown_not_obeyed():
    async def scenario():
        async def subscribe(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close(code=1008, message="go away\u001b[2J\u001b]0;owned\u0007".encode())
            return ws

        app = web.Application()
        app.router.add_get("/v1/subscribe", subscribe)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        proc = await asyncio.create_subprocess_exec(
            *MONITOR, "--connect", f"ws://127.0.0.1:{port}", "--no-dashboard",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        await runner.cleanup()
        return proc.returncode, err.decode()

    code, err = run(scenario())
    assert code == 1 and err.count("\n") == 1
    assert "\x1b" not in err and "\x07" not in err and "go away\\x1b[2J\\x1b]0;owned\\x07" in err
