"""Quality alerts: ``degraded`` when smoothed MOS stays low, ``recovered`` with hysteresis.

``AlertTracker`` is pure stream-time logic, one per stream. ``Webhook`` POSTs alerts as
JSON from its own task, with retries and backoff, reading from a bounded subscription so
a dead endpoint can never slow scoring.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from jsqa.sanitize import printable

from .events import Alert

log = logging.getLogger(__name__)


class AlertTracker:
    """Degraded once the smoothed MOS has been below ``threshold`` for ``seconds`` of
    stream time; recovered once it rises to ``threshold + hysteresis``. Windows without
    speech neither start nor reset the timer."""

    def __init__(self, threshold: float, seconds: float = 5.0, hysteresis: float = 0.2):
        self.threshold = threshold
        self.seconds = seconds
        self.hysteresis = hysteresis
        self.degraded = False
        self._below_since: float | None = None

    def update(self, stream_id: str, t: float, mos_smoothed: float | None) -> Alert | None:
        if mos_smoothed is None:
            return None
        if not self.degraded:
            if mos_smoothed >= self.threshold:
                self._below_since = None
                return None
            if self._below_since is None:
                self._below_since = t
            if t - self._below_since >= self.seconds:
                self.degraded = True
                return Alert(stream_id, "degraded", mos_smoothed, self.threshold, t)
            return None
        if mos_smoothed >= self.threshold + self.hysteresis:
            self.degraded = False
            self._below_since = None
            return Alert(stream_id, "recovered", mos_smoothed, self.threshold, t)
        return None


class Webhook:
    """Delivers alert dicts to ``url`` by HTTP POST; gives up on one after ``retries``."""

    def __init__(self, url: str, retries: int = 3, backoff: float = 0.5, timeout: float = 5.0):
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.delivered = 0
        self.failed = 0

    async def run(self, alerts) -> None:
        """Consume an async iterator of alert dicts until it ends."""
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            async for alert in alerts:
                await self._deliver(session, alert)

    async def _deliver(self, session: aiohttp.ClientSession, alert: dict) -> None:
        for attempt in range(self.retries + 1):
            try:
                async with session.post(self.url, json=alert) as response:
                    if response.status < 400:
                        self.delivered += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                problem = str(e) or type(e).__name__
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2**attempt)
        self.failed += 1
        # the problem may quote the webhook server's reply
        log.warning("alert webhook %s failed after %d tries: %s", self.url, self.retries + 1, printable(problem))
