"""Immutable events the engine publishes, and their JSON form.

Every event's ``to_dict()`` is a JSON-able dict with a ``type`` key; subscribers, the
dashboard, JSON lines and WebSocket clients all see that same form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar


class _Event:
    type: ClassVar[str]

    def to_dict(self) -> dict:
        return {"type": self.type, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class ScoreEvent(_Event):
    """One scored window. ``mos`` is None when the window held too little speech."""

    type: ClassVar[str] = "score"
    stream_id: str
    t_start: float
    t_end: float
    mos: float | None
    mos_smoothed: float | None
    mos_mean: float | None
    speech_ratio: float
    level_dbfs: float
    clipping_ratio: float
    latency_ms: float
    no_speech: bool


@dataclass(frozen=True)
class StreamStarted(_Event):
    type: ClassVar[str] = "stream_started"
    stream_id: str
    source: str
    wall_time: float


@dataclass(frozen=True)
class StreamEnded(_Event):
    """The call's summary. MOS figures are None when no window held speech."""

    type: ClassVar[str] = "stream_ended"
    stream_id: str
    duration_s: float
    mean_mos: float | None
    worst_mos: float | None
    windows: int
    reason: str


@dataclass(frozen=True)
class Alert(_Event):
    """``state`` is "degraded" or "recovered"; ``t`` is stream time in seconds."""

    type: ClassVar[str] = "alert"
    stream_id: str
    state: str
    mos_smoothed: float
    threshold: float
    t: float


@dataclass(frozen=True)
class Stats(_Event):
    """Engine-wide figures, published about once a second (dashboard headers use them)."""

    type: ClassVar[str] = "stats"
    active_streams: int
    windows_scored: int
    windows_dropped: int
    events_dropped: int
    windows_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    model_name: str
