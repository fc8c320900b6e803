"""The Twilio Media Streams protocol, checked message by message.

Twilio sends ``connected``, then ``start`` (``streamSid``, tracks, ``mediaFormat``), then
``media`` messages with base64 8 kHz mu-law payloads, then ``stop``; ``mark`` and ``dtmf``
may appear between. ``TwilioCall.receive`` turns each text message into one ``Message``
or raises ``ProtocolError`` with the WebSocket close code to use.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from aiohttp import WSCloseCode

from .ids import STREAM_ID_RULE, is_stream_id

ENCODINGS = {"audio/x-mulaw": "mulaw", "audio/x-alaw": "alaw"}
TRACKS = ("inbound", "outbound")


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Message:
    event: str  # connected, start, media, stop, or ignored
    stream_sid: str = ""
    track: str = "inbound"
    payload: bytes = b""
    encoding: str = "mulaw"
    rate: int = 8000
    channels: int = 1
    tracks: tuple[str, ...] = field(default_factory=tuple)


def _invalid(reason: str) -> ProtocolError:
    return ProtocolError(WSCloseCode.INVALID_TEXT, reason)


def _order(reason: str) -> ProtocolError:
    return ProtocolError(WSCloseCode.POLICY_VIOLATION, f"twilio: {reason}")


def _whole_number(value) -> int | None:
    """8000, 8000.0 and "8000" all mean 8000; anything else (1e999, [8000], true) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


class TwilioCall:
    """The state of one Twilio WebSocket: before start, started, stopped."""

    def __init__(self):
        self.stream_sid: str | None = None
        self.stopped = False
        self.seen_connected = False

    def receive(self, text: str) -> Message:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise _invalid(f"invalid JSON: {e.msg} at character {e.pos}") from None
        except RecursionError:
            raise _invalid("invalid JSON: nested too deeply") from None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise _invalid("twilio: each message must be a JSON object with an 'event' field")
        event = data["event"]
        if self.stopped:
            raise _order(f"{event!r} after 'stop'")
        if event == "connected":
            if self.seen_connected or self.stream_sid is not None:
                raise _order("'connected' after the call began")
            self.seen_connected = True
            return Message("connected")
        if event == "start":
            return self._start(data)
        if self.stream_sid is None:
            raise _order(f"{event!r} before 'start'")
        sid = data.get("streamSid", self.stream_sid)
        if sid != self.stream_sid:
            raise _order(f"streamSid {sid!r} does not match the call's {self.stream_sid!r}")
        if event == "media":
            return self._media(data)
        if event == "stop":
            self.stopped = True
            return Message("stop", self.stream_sid)
        if event in ("mark", "dtmf"):
            return Message("ignored", self.stream_sid)
        raise ProtocolError(WSCloseCode.UNSUPPORTED_DATA, f"twilio: unknown event {event!r}")

    def _start(self, data: dict) -> Message:
        if self.stream_sid is not None:
            raise _order("a second 'start'")
        start = data.get("start")
        if not isinstance(start, dict):
            raise _invalid("twilio: 'start' message without a 'start' object")
        sid = data.get("streamSid") or start.get("streamSid")
        # the sid becomes the stream id, shown on dashboards and in metrics: the same rule as /v1/stream
        if not is_stream_id(sid):
            raise _invalid(f"twilio: 'start' needs a streamSid of {STREAM_ID_RULE}")
        fmt = start.get("mediaFormat", {})
        if not isinstance(fmt, dict):
            raise _invalid("twilio: 'mediaFormat' must be an object")
        name = fmt.get("encoding", "audio/x-mulaw")
        encoding = ENCODINGS.get(name) if isinstance(name, str) else None
        if encoding is None:
            raise ProtocolError(
                WSCloseCode.UNSUPPORTED_DATA,
                f"twilio: unsupported media encoding {name!r}; use audio/x-mulaw or audio/x-alaw",
            )
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list) or not all(isinstance(t, str) and t in TRACKS for t in tracks):
            raise _invalid("twilio: tracks must be a list of 'inbound' and/or 'outbound'")
        rate = _whole_number(fmt.get("sampleRate", 8000))
        channels = _whole_number(fmt.get("channels", 1))
        if rate is None or channels is None:
            raise _invalid("twilio: sampleRate and channels must be whole numbers")
        self.stream_sid = sid
        return Message("start", sid, encoding=encoding, rate=rate, channels=channels,
                       tracks=tuple(dict.fromkeys(tracks)))

    def _media(self, data: dict) -> Message:
        media = data.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise _invalid("twilio: 'media' message without a base64 'payload'")
        track = media.get("track", "inbound")
        if not isinstance(track, str) or track not in TRACKS:
            raise _invalid("twilio: media track must be 'inbound' or 'outbound'")
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("twilio: media payload is not valid base64") from None
        return Message("media", self.stream_sid, track=track, payload=payload)
