"""subscribe_remote against a real aiohttp server on 127.0.0.1 that goes away and comes back."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import pytest
from aiohttp import web
from jsqa.streaming.remote import RemoteError, subscribe_remote, subscribe_url

TOKEN = "s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EventServer:
    """A /v1/subscribe endpoint that requires a bearer token and sends each client
    ``events`` once; it can be stopped and started again on the same port."""

    def __init__(self, port: int, events: list[dict]):
        self.port = port
        self.events = events
        self.clients: list[web.WebSocketResponse] = []
        self.auth_headers: list[str | None] = []
        self.runner: web.AppRunner | None = None

    async def subscribe(self, request: web.Request) -> web.WebSocketResponse:
        self.auth_headers.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized(text="token required")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.clients.append(ws)
        await ws.send_str("not json")  # skipped by the client
        for event in self.events:
            await ws.send_str(json.dumps(event))
        async for _ in ws:  # hold the socket open until either side closes it
            pass
        return ws

    async def close_clients(self, app: web.Application) -> None:
        for ws in list(self.clients):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/subscribe", self.subscribe)
        app.on_shutdown.append(self.close_clients)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()


def event(n: int) -> dict:
    return {"type": "score", "stream_id": "call-1", "t_end": float(n), "mos": 3.5}


async def next_matching(gen, predicate, limit=50):
    """The next event from ``gen`` for which ``predicate`` holds, and those skipped on the way."""
    skipped = []
    for _ in range(limit):
        e = await asyncio.wait_for(anext(gen), timeout=10)
        if predicate(e):
            return e, skipped
        skipped.append(e)
    raise AssertionError(f"no matching event in {skipped}")


def test_subscribe_url_adds_the_endpoint():
    assert subscribe_url("ws://127.0.0.1:8765") == "ws://127.0.0.1:8765/v1/subscribe"
    assert subscribe_url("127.0.0.1:8765") == "ws://127.0.0.1:8765/v1/subscribe"
    assert subscribe_url("https://h/v1/subscribe?stream_id=a") == "wss://h/v1/subscribe?stream_id=a"
    with pytest.raises(ValueError, match="ws://"):
        subscribe_url("ftp://h")


def test_reconnects_with_backoff_after_the_server_goes_away_and_comes_back():
    async def scenario():
        port = free_port()
        server = EventServer(port, [event(1)])
        await server.start()
        gen = subscribe_remote(f"ws://127.0.0.1:{port}", TOKEN, initial_backoff=0.05, max_backoff=0.2)
        try:
            first, skipped = await next_matching(gen, lambda e: e["type"] == "score")
            assert [e["state"] for e in skipped] == ["connecting", "connected"]
            assert first == event(1)
            assert server.auth_headers == [f"Bearer {TOKEN}"]

            await server.stop()
            down = [await asyncio.wait_for(anext(gen), timeout=10) for _ in range(5)]
            assert {e["state"] for e in down} == {"reconnecting"}
            assert "server closed the connection" in down[0]["detail"]
            assert all("cannot reach 127.0.0.1" in e["detail"] for e in down[1:])
            delays = [float(re.search(r"retry in ([\d.]+)s", e["detail"]).group(1)) for e in down]
            assert delays == [0.05, 0.1, 0.2, 0.2, 0.2]  # doubling, capped at max_backoff

            server.events = [event(2)]
            await server.start()
            again, skipped = await next_matching(gen, lambda e: e["type"] == "score")
            assert again == event(2)
            assert skipped[-1]["state"] == "connected"
        finally:
            await gen.aclose()
            await asyncio.sleep(0.1)
            open_clients = [ws for ws in server.clients if not ws.closed]
            await server.stop()
        assert len(server.clients) == 2 and open_clients == []  # closing the iterator closed its socket

    asyncio.run(scenario())


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_refused_token_raises_instead_of_retrying(token):
    async def scenario():
        server = EventServer(free_port(), [event(1)])
        await server.start()
        gen = subscribe_remote(f"ws://127.0.0.1:{server.port}", token, initial_backoff=0.05)
        try:
            assert (await anext(gen))["state"] == "connecting"
            with pytest.raises(RemoteError, match="401.*--token"):
                await anext(gen)
        finally:
            await server.stop()
        assert server.auth_headers == [None if token is None else f"Bearer {token}"]

    asyncio.run(scenario())


def test_a_server_that_is_not_there_yet_is_retried_until_it_starts():
    async def scenario():
        port = free_port()
        gen = subscribe_remote(f"ws://127.0.0.1:{port}", TOKEN, initial_backoff=0.05, max_backoff=0.1)
        assert (await anext(gen))["state"] == "connecting"
        first = await anext(gen)
        assert first["state"] == "reconnecting" and "cannot reach" in first["detail"]
        server = EventServer(port, [event(7)])
        await server.start()
        try:
            got, _ = await next_matching(gen, lambda e: e["type"] == "score")
            assert got == event(7)
        finally:
            await gen.aclose()
            await server.stop()

    asyncio.run(scenario())


def test_against_the_real_server_events_flow_a_bad_token_is_refused_and_a_restart_is_survived(
    tiny_onnx_model, clean_speech
):
    from jsqa.streaming.engine import Engine
    from jsqa.streaming.server import serve

    from jsqa.scorer import Scorer

    async def scenario():
        port = free_port()
        async with Engine(Scorer(tiny_onnx_model)) as engine:
            async with serve(engine, "127.0.0.1", port, token=TOKEN):
                refused = subscribe_remote(f"ws://127.0.0.1:{port}", "wrong")
                with pytest.raises(RemoteError, match="refused the subscription: unauthorized"):
                    await next_matching(refused, lambda e: False)  # the server accepts, then closes

                gen = subscribe_remote(f"ws://127.0.0.1:{port}", TOKEN, initial_backoff=0.05, max_backoff=0.1)
                await next_matching(gen, lambda e: e.get("state") == "connected")
                await asyncio.sleep(0.2)  # the server registers the subscriber
                engine.open_stream("call-42", "test")
                await engine.push("call-42", clean_speech[: 5 * 16000])
                engine.end_stream("call-42")
                got, _ = await next_matching(gen, lambda e: e["type"] == "score")
                assert got["stream_id"] == "call-42" and 1.0 <= got["mos"] <= 5.0
                ended, _ = await next_matching(gen, lambda e: e["type"] == "stream_ended")
                assert ended["stream_id"] == "call-42"
            down, _ = await next_matching(gen, lambda e: e["type"] == "connection")
            assert down["state"] == "reconnecting"
            async with serve(engine, "127.0.0.1", port, token=TOKEN):
                back, _ = await next_matching(gen, lambda e: e.get("state") == "connected")
                assert back["detail"].endswith("/v1/subscribe")
                await gen.aclose()

    asyncio.run(scenario())
