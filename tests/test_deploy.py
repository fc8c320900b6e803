"""deploy/: real nginx from the shipped config in front of two real servers, and the
Prometheus and Grafana files checked against the series a real server exports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from jsqa.streaming.engine import Engine
from jsqa.streaming.server import Limits, serve
from prometheus_client.parser import text_string_to_metric_families

from jsqa.audio import resample
from jsqa.g711 import mulaw_encode
from jsqa.scorer import Scorer

from .stream_support import TEST_LIMITS, pcm16, run

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def nginx(tmp: Path, backends: list[int]):
    """nginx as deploy/nginx/jsqa.conf configures it, with this test's ports in the two
    files an operator edits; yields its port."""
    port = _free_port()
    (tmp / "jsqa").mkdir()
    shutil.copy(DEPLOY / "nginx" / "jsqa" / "proxy.conf", tmp / "jsqa" / "proxy.conf")
    (tmp / "jsqa" / "backends.conf").write_text("".join(f"server 127.0.0.1:{p};\n" for p in backends))
    (tmp / "jsqa" / "listen.conf").write_text(f"listen 127.0.0.1:{port};\n")
    temp_paths = "".join(f"{kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(
        f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\nworker_processes 1;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\naccess_log off;\n{temp_paths}include {DEPLOY}/nginx/jsqa.conf;\n}}\n"
    )
    proc = subprocess.Popen([NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf"),
                             "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"nginx did not start: {proc.stdout.read()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _stream(session, url: str, audio) -> list[float]:
    """Send a whole stream and return the ends of the windows scored, from its own socket."""
    async with session.ws_connect(url) as ws:
        await ws.send_bytes(pcm16(audio))
        await ws.send_str('{"type": "end"}')
        return [e["t_end"] for e in map(json.loads, [m.data async for m in ws]) if e["type"] == "score"]


async def _scores_seen(session, url: str, ready: asyncio.Event) -> list[float]:
    """A subscriber: the window ends of every score until its stream ends."""
    seen = []
    async with session.ws_connect(url) as ws:
        ready.set()
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "score":
                seen.append(event["t_end"])
            if event["type"] == "stream_ended":
                return seen
    return seen


def _twilio_call(sid: str, audio16k) -> list[str]:
    codes = mulaw_encode(resample(audio16k, 16000, 8000))
    fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    messages = [json.dumps({"event": "start", "streamSid": sid, "start": {
        "streamSid": sid, "callSid": "CAnginx", "tracks": ["inbound"], "mediaFormat": fmt}})]
    messages += [json.dumps({"event": "media", "streamSid": sid, "media": {
        "track": "inbound", "payload": base64.b64encode(codes[i : i + 800].tobytes()).decode()}})
        for i in range(0, len(codes), 800)]
    return messages + [json.dumps({"event": "stop", "streamSid": sid})]


async def _twilio_through(session, base: str, key: str, audio) -> tuple[list[float], int]:
    """A Twilio call sent to /v1/twilio/KEY, and what its subscriber with route=KEY saw."""
    ready = asyncio.Event()
    sid = f"MZ{key}"
    sub = asyncio.create_task(_scores_seen(session, f"{base}/v1/subscribe?route={key}&stream_id={sid}", ready))
    await ready.wait()
    async with session.ws_connect(f"{base}/v1/twilio/{key}") as call:
        for message in _twilio_call(sid, audio):
            await call.send_str(message)
        async for _ in call:  # until the server closes the call
            pass
    return await sub, call.close_code


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")
def test_nginx_spreads_streams_over_two_servers_and_routes_subscribers(tiny_onnx_model, clean_speech, tmp_path):
    audio = clean_speech[: 16000 * 4]  # windows ending at 3 and 4 s

    async def scenario():
        limits = Limits(**TEST_LIMITS)
        async with (Engine(Scorer(tiny_onnx_model)) as one, Engine(Scorer(tiny_onnx_model)) as two,
                    serve(one, "127.0.0.1", 0, limits=limits) as (_, port_one),
                    serve(two, "127.0.0.1", 0, limits=limits) as (_, port_two)):
            engines = {"one": one, "two": two}
            landed: dict[str, str] = {}
            with nginx(tmp_path, [port_one, port_two]) as port:
                base = f"ws://127.0.0.1:{port}"
                async with aiohttp.ClientSession() as session:
                    scores = {}
                    # streams through nginx until both servers have scored some
                    for i in range(40):
                        sid = f"call{i}"
                        before = {name: e.streams_total for name, e in engines.items()}
                        scores[sid] = await _stream(session, f"{base}/v1/stream?stream_id={sid}", audio)
                        landed[sid] = next(name for name, e in engines.items() if e.streams_total > before[name])
                        if min(list(landed.values()).count(name) for name in engines) >= 2:
                            break
                    # a subscriber of one stream on each server, through nginx, gets its scores
                    subscribed = {}
                    for name in ("one", "two"):
                        sid = next(s for s, n in landed.items() if n == name)
                        ready = asyncio.Event()
                        sub = asyncio.create_task(_scores_seen(session, f"{base}/v1/subscribe?stream_id={sid}", ready))
                        await ready.wait()
                        await _stream(session, f"{base}/v1/stream?stream_id={sid}", audio)
                        subscribed[name] = await sub
                    # Twilio calls routed by the key in their path; a subscriber passes the same key.
                    # Six of them: a subscriber on the wrong server is then all but certain to show.
                    twilio = await asyncio.gather(*(_twilio_through(session, base, f"CA{i}", audio) for i in range(6)))
            return landed, scores, subscribed, twilio

    landed, scores, subscribed, twilio = run(scenario(), timeout=180)
    assert {"one", "two"} <= set(landed.values())  # streams landed on both servers
    assert all(scores[sid] == [3.0, 4.0] for sid in landed)  # each with its scores, through nginx
    assert subscribed == {"one": [3.0, 4.0], "two": [3.0, 4.0]}
    assert twilio == [([3.0, 4.0], 1000)] * 6


def test_grafana_and_prometheus_use_only_series_the_server_exports(tiny_onnx_model, clean_speech):
    async def scenario():
        async with Engine(Scorer(tiny_onnx_model)) as engine, serve(engine, "127.0.0.1", 0) as (host, port):
            engine.open_stream("a")
            await engine.push("a", clean_speech[: 16000 * 4])
            while engine.windows_scored < 2:
                await asyncio.sleep(0.02)
            async with aiohttp.ClientSession() as session, session.get(f"http://{host}:{port}/metrics") as r:
                return await r.text()

    exported = {s.name for f in text_string_to_metric_families(run(scenario())) for s in f.samples}

    dashboard = json.loads((DEPLOY / "grafana" / "jsqa-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "jsqa-rules.yml").read_text())
    queries += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert queries
    for expr in queries:
        used = set(re.findall(r"jsqa_[a-z0-9_]+", expr))
        assert used, f"no jsqa_ series in {expr!r}"
        assert used <= exported, f"{expr!r} uses {used - exported}, which the server does not export"

    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["jsqa"]["metrics_path"] == "/metrics"
    assert "jsqa-rules.yml" in scrape["rule_files"]
