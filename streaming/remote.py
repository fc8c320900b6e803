"""Subscribe to a remote ``jsqa-monitor`` server's events, reconnecting when it goes away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp

SUBSCRIBE_PATH = "/v1/subscribe"


class RemoteError(Exception):
    """The server refused the subscription for good (bad token, wrong URL): retrying won't help."""


def subscribe_url(url: str) -> str:
    """``ws://HOST:PORT`` -> ``ws://HOST:PORT/v1/subscribe``; http(s) becomes ws(s)."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    path = parts.path if parts.path not in ("", "/") else SUBSCRIBE_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _connection(state: str, detail: str = "") -> dict:
    return {"type": "connection", "state": state, "detail": detail}


async def subscribe_remote(
    url: str,
    token: str | None = None,
    *,
    max_backoff: float = 30.0,
    initial_backoff: float = 0.5,
    heartbeat: float = 15.0,
) -> AsyncIterator[dict]:
    """Yield the event dicts a server publishes on ``/v1/subscribe``, forever.

    When the server cannot be reached or drops the connection, waits (``initial_backoff``,
    doubling up to ``max_backoff`` seconds) and tries again, yielding ``connection`` events
    (``connecting``, ``connected``, ``reconnecting`` with the reason and the delay) so a
    screen can say what is going on. A refusal that retrying cannot fix (HTTP 401, 403,
    404, or a close with code 1008, policy violation, as for a wrong token) raises
    :class:`RemoteError`. Messages that are not JSON objects are skipped.
    """
    target = subscribe_url(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    backoff = initial_backoff
    yield _connection("connecting", target)
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            try:
                async with session.ws_connect(target, heartbeat=heartbeat) as ws:
                    yield _connection("connected", target)
                    while True:
                        msg = await ws.receive()
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        # only a server that delivers resets the delay; one that accepts and
                        # drops at once (at its subscriber limit) is retried ever more slowly
                        backoff = initial_backoff
                        try:
                            event = json.loads(msg.data)
                        except ValueError:
                            continue
                        if isinstance(event, dict):
                            yield event
                    said = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else ""
                    if ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION:
                        # jsqa-monitor --listen accepts, then closes a socket with a bad token
                        raise RemoteError(
                            f"{target} refused the subscription: {said or 'policy violation'} (check --token)"
                        )
                    reason = f"server closed the connection ({said or f'code {ws.close_code}'})"
            except aiohttp.WSServerHandshakeError as e:
                if e.status in (401, 403):
                    raise RemoteError(
                        f"{target} refused the subscription ({e.status}): pass the server's --token"
                    ) from None
                if e.status == 404:
                    raise RemoteError(f"{target} has no subscribe endpoint (404): check the URL") from None
                reason = f"handshake failed ({e.status})"
            except aiohttp.ClientConnectorError as e:
                reason = f"cannot reach {e.host}:{e.port}"
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                reason = str(e) or type(e).__name__
            yield _connection("reconnecting", f"{reason}; retry in {backoff:g}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
