"""The aiohttp server: audio in over WebSocket (raw or Twilio), events and figures out.

Endpoints: ``/v1/stream``, ``/v1/twilio``, ``/v1/subscribe`` (WebSocket), ``/v1/streams``,
``/metrics`` (Prometheus), ``/healthz``. With a token, every endpoint but ``/healthz``
needs ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``. Each violation of a limit or of
the protocol closes only the offending connection, with a close code and a readable reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
import weakref
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from jsqa.sanitize import printable

from . import metrics
from .decode import DecodeError, Decoder
from .engine import Engine, StreamError
from .ids import STREAM_ID_RULE, is_stream_id
from .twilio import ProtocolError, TwilioCall

SOCKETS_KEY = web.AppKey("sockets", weakref.WeakSet)


@dataclass(frozen=True)
class Limits:
    max_streams: int = 256
    max_subscribers: int = 64
    max_frame_bytes: int = 256 * 1024
    # audio may arrive at most this many times faster than real time, after a burst allowance
    max_speed: float = 2.0
    burst_seconds: float = 10.0
    subscriber_queue: int = 1024  # events held for each /v1/subscribe client
    idle_timeout: float = 30.0  # a stream sending no audio this long is closed
    request_timeout: float = 5.0  # an HTTP connection sending no request this long is closed


class Violation(Exception):
    """Ends one connection: ``code`` and ``reason`` go into the WebSocket close frame."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Pace:
    """Rejects audio that arrives faster than ``max_speed`` times real time."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.first: float | None = None

    def check(self, audio_seconds: float) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        allowed = self.limits.burst_seconds + self.limits.max_speed * (now - self.first)
        if audio_seconds > allowed:
            raise Violation(
                WSCloseCode.POLICY_VIOLATION,
                f"audio arrives faster than {self.limits.max_speed:g}x real time; send it paced",
            )


class _Idle:
    """Ends a stream whose client sends no audio for ``seconds``, which would otherwise
    hold one of the server's stream slots for nothing."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.touch()

    def touch(self) -> None:
        """Audio was accepted (after any back-pressure wait, which is not the client's idling)."""
        self._last = time.monotonic()

    async def messages(self, ws: web.WebSocketResponse):
        """The socket's messages, as ``async for msg in ws`` gives them, until idle."""
        while True:
            left = self._last + self.seconds - time.monotonic()
            try:
                msg = await ws.receive(timeout=max(left, 0.001))  # aiohttp reads 0 as no timeout
            except asyncio.TimeoutError:
                raise Violation(WSCloseCode.POLICY_VIOLATION, f"idle: no audio for {self.seconds:g} s") from None
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            yield msg


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    # a close frame's reason may hold at most 123 bytes, and they must stay valid UTF-8
    await ws.close(code=code, message=reason.encode()[:123].decode(errors="ignore").encode())


def _token_ok(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True
    # the auth scheme is case-insensitive (RFC 9110 11.1)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = request.query.get("token", "")
    # undecodable header bytes arrive as lone surrogates: compare them rather than fail
    return hmac.compare_digest(given.strip().encode(errors="surrogatepass"), token.encode())


class _Socket(web.WebSocketResponse):
    """aiohttp closes a socket itself, with no reason, for a frame over ``max_msg_size``
    (refused from its header, unread) or a text frame that is not UTF-8; this gives those
    closes a reason like every other. aiohttp's cap sits well above ours, so frames a little
    over our limit are read whole and refused by ``_check_frame``: an orderly close, which a
    client still sending does not turn into a connection reset."""

    def __init__(self, limits: Limits):
        super().__init__(max_msg_size=limits.max_frame_bytes * 4, heartbeat=30)
        self._reasons = {
            WSCloseCode.MESSAGE_TOO_BIG: f"frame exceeds the limit of {limits.max_frame_bytes} bytes",
            WSCloseCode.INVALID_TEXT: "text frame is not valid UTF-8",
            WSCloseCode.PROTOCOL_ERROR: "malformed WebSocket frame",
        }

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if not message and code in self._reasons:
            message = self._reasons[code].encode()
        return await super().close(code=code, message=message, drain=drain)


class _MalformedRequestLine(logging.Filter):
    """aiohttp logs a malformed HTTP request (a header over 8 KiB, a Content-Length that
    overflows) with a traceback; it is the client's mistake, worth one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "a client"
            # aiohttp's message may go on to quote the request over several lines: its first line names the problem
            what = (str(error.message).strip().splitlines() or [type(error).__name__])[0].rstrip(":")
            record.msg, record.args = "refused a malformed HTTP request from %s: %s", (printable(peer), printable(what))
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


HTTP_LOG = logging.getLogger(__name__ + ".http")
HTTP_LOG.addFilter(_MalformedRequestLine())


async def _accept(request: web.Request, limits: Limits) -> web.WebSocketResponse:
    ws = _Socket(limits)
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    return ws


def _auth_middleware(token: str | None, limits: Limits):
    @web.middleware
    async def check(request: web.Request, handler):
        if request.path == "/healthz" or _token_ok(request, token):
            return await handler(request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = await _accept(request, limits)
            await _close(ws, WSCloseCode.POLICY_VIOLATION, "unauthorized: send Authorization: Bearer TOKEN or ?token=TOKEN")
            return ws
        return web.json_response(
            {"error": "unauthorized: send Authorization: Bearer TOKEN or ?token=TOKEN"}, status=401
        )

    return check


async def _send_events(ws: web.WebSocketResponse, events, until_end_of: str | None = None) -> None:
    async for event in events:
        if ws.closed:
            return
        await ws.send_str(json.dumps(event))
        if until_end_of is not None and event["type"] == "stream_ended" and event["stream_id"] == until_end_of:
            return


def _stream_params(request: web.Request) -> tuple[str, Decoder]:
    query = request.query
    stream_id = query.get("stream_id") or uuid.uuid4().hex[:12]
    if not is_stream_id(stream_id):
        raise Violation(WSCloseCode.POLICY_VIOLATION, f"stream_id must be {STREAM_ID_RULE}")
    try:
        rate = int(query.get("rate", "16000"))
        channels = int(query.get("channels", "1"))
    except ValueError:
        raise Violation(WSCloseCode.UNSUPPORTED_DATA, "rate and channels must be integers") from None
    try:
        decoder = Decoder(query.get("encoding", "pcm_s16le"), rate, channels)
    except DecodeError as e:
        raise Violation(WSCloseCode.UNSUPPORTED_DATA, str(e)) from None
    return stream_id, decoder


def _open(engine: Engine, limits: Limits, stream_id: str, source: str) -> None:
    if engine.active_streams >= limits.max_streams:
        raise Violation(WSCloseCode.TRY_AGAIN_LATER, f"server is at its limit of {limits.max_streams} streams")
    try:
        engine.open_stream(stream_id, source)
    except StreamError as e:
        raise Violation(WSCloseCode.POLICY_VIOLATION, str(e)) from None


def _check_frame(size: int, limits: Limits) -> None:
    if size > limits.max_frame_bytes:
        raise Violation(
            WSCloseCode.MESSAGE_TOO_BIG, f"frame of {size} bytes exceeds the limit of {limits.max_frame_bytes} bytes"
        )


def create_app(engine: Engine, *, token: str | None = None, limits: Limits = Limits()) -> web.Application:
    """The server's aiohttp application around a started engine."""
    app = web.Application(middlewares=[_auth_middleware(token, limits)])
    app[SOCKETS_KEY] = weakref.WeakSet()
    subscribers: set = set()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(engine).encode(), headers={"Content-Type": metrics.CONTENT_TYPE})

    async def streams(request: web.Request) -> web.Response:
        return web.json_response({"streams": engine.streams(), "stats": engine.stats()})

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = await _accept(request, limits)
        opened = None
        sender = None
        reason = "disconnected"
        try:
            stream_id, decoder = _stream_params(request)
            # subscribed before the stream opens, so the socket also gets its own stream_started
            events = engine.subscribe(stream_id)
            try:
                _open(engine, limits, stream_id, "websocket")
            except Violation:
                events.close()
                raise
            opened = stream_id
            sender = asyncio.create_task(_send_events(ws, events, until_end_of=stream_id))
            pace = _Pace(limits)
            idle = _Idle(limits.idle_timeout)
            async for msg in idle.messages(ws):
                if msg.type == WSMsgType.BINARY:
                    _check_frame(len(msg.data), limits)
                    try:
                        samples = decoder.decode(msg.data)
                    except DecodeError as e:
                        raise Violation(WSCloseCode.INVALID_TEXT, str(e)) from None
                    pace.check(decoder.seconds_in)
                    await engine.push(stream_id, samples)
                    idle.touch()
                elif msg.type == WSMsgType.TEXT:
                    _check_frame(len(msg.data), limits)
                    _expect_end(msg.data)
                    await engine.push(stream_id, decoder.flush())
                    engine.end_stream(stream_id, "end")
                    opened = None
                    await sender  # the tail's score and stream_ended go out before the close
                    await _close(ws, WSCloseCode.OK, "stream ended")
                    break
        except Violation as v:
            reason = v.reason
            await _close(ws, v.code, v.reason)
        finally:
            if opened is not None:
                engine.end_stream(opened, reason)
            if sender is not None:
                sender.cancel()
                events.close()
        return ws

    async def twilio(request: web.Request) -> web.WebSocketResponse:
        ws = await _accept(request, limits)
        call = TwilioCall()
        decoders: dict[str, Decoder] = {}
        ids: dict[str, str] = {}
        reason = "disconnected"
        pace = _Pace(limits)
        idle = _Idle(limits.idle_timeout)
        try:
            async for msg in idle.messages(ws):
                if msg.type == WSMsgType.BINARY:
                    raise Violation(WSCloseCode.UNSUPPORTED_DATA, "twilio: binary frames are not part of the protocol")
                if msg.type != WSMsgType.TEXT:
                    continue
                _check_frame(len(msg.data), limits)
                try:
                    message = call.receive(msg.data)
                except ProtocolError as e:
                    raise Violation(e.code, e.reason) from None
                if message.event == "start":
                    for track in message.tracks:
                        try:
                            decoders[track] = Decoder(message.encoding, message.rate, message.channels)
                        except DecodeError as e:
                            raise Violation(WSCloseCode.UNSUPPORTED_DATA, f"twilio: {e}") from None
                        stream_id = message.stream_sid if track == "inbound" else f"{message.stream_sid}:{track}"
                        _open(engine, limits, stream_id, "twilio")
                        ids[track] = stream_id
                elif message.event == "media":
                    decoder = decoders.get(message.track)
                    if decoder is None:
                        raise Violation(WSCloseCode.POLICY_VIOLATION, f"twilio: media for unannounced track {message.track!r}")
                    try:
                        samples = decoder.decode(message.payload)
                    except DecodeError as e:
                        raise Violation(WSCloseCode.INVALID_TEXT, f"twilio: {e}") from None
                    pace.check(decoder.seconds_in)
                    await engine.push(ids[message.track], samples)
                    idle.touch()
                elif message.event == "stop":
                    for track, stream_id in ids.items():
                        await engine.push(stream_id, decoders[track].flush())
                        engine.end_stream(stream_id, "stop")
                    ids.clear()
                    await _close(ws, WSCloseCode.OK, "call stopped")
                    break
        except Violation as v:
            reason = v.reason
            await _close(ws, v.code, v.reason)
        finally:
            for stream_id in ids.values():
                engine.end_stream(stream_id, reason)
        return ws

    async def subscribe(request: web.Request) -> web.WebSocketResponse:
        ws = await _accept(request, limits)
        stream_id = request.query.get("stream_id") or None
        if len(subscribers) >= limits.max_subscribers:
            await _close(ws, WSCloseCode.TRY_AGAIN_LATER, f"server is at its limit of {limits.max_subscribers} subscribers")
            return ws
        events = engine.subscribe(stream_id, maxsize=limits.subscriber_queue)
        subscribers.add(events)
        sender = asyncio.create_task(_send_events(ws, events))
        try:
            # reading is what notices the client leaving; subscribers send nothing we need
            async for _ in ws:
                pass
        finally:
            subscribers.discard(events)
            events.close()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    async def close_sockets(app: web.Application) -> None:
        for ws in list(app[SOCKETS_KEY]):
            await _close(ws, WSCloseCode.GOING_AWAY, "server shutting down")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/v1/streams", streams)
    app.router.add_get("/v1/stream", stream)
    app.router.add_get("/v1/twilio", twilio)
    app.router.add_get("/v1/subscribe", subscribe)
    app.on_shutdown.append(close_sockets)
    return app


def _expect_end(text: str) -> None:
    """The one text message /v1/stream accepts is ``{"type": "end"}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise Violation(WSCloseCode.INVALID_TEXT, f"invalid JSON: {e.msg} at character {e.pos}") from None
    except RecursionError:
        raise Violation(WSCloseCode.INVALID_TEXT, "invalid JSON: nested too deeply") from None
    if not isinstance(data, dict) or data.get("type") != "end":
        raise Violation(WSCloseCode.UNSUPPORTED_DATA, 'the only text message accepted is {"type": "end"}')


@contextlib.asynccontextmanager
async def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8765, **options):
    """Run the server until the block exits; yields the bound ``(host, port)``
    (port 0 picks a free one)."""
    # aiohttp's keep-alive timeout also closes a new connection that never sends a request
    request_timeout = options.get("limits", Limits()).request_timeout
    runner = web.AppRunner(create_app(engine, **options), handle_signals=False, access_log=None, logger=HTTP_LOG,
                           keepalive_timeout=request_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    try:
        yield bound[0], bound[1]
    finally:
        await runner.cleanup()
