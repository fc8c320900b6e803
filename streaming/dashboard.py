"""The terminal dashboard: a rich ``Live`` view of score events.

Rendering is a pure function of a :class:`DashboardState`: ``state.apply(event)`` folds each
event in, ``render(state, width)`` draws it. :func:`run_dashboard` only wires the two to an
event iterator, a refresh clock and the keyboard, so the views can be tested through rich's
recording console without a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from jsqa.sanitize import printable

from .sparkline import big_text, big_width, sparkline, time_axis

HISTORY_S = 120.0  # the sparkline shows the last two minutes of stream time
RATE_WINDOW_S = 5.0  # windows per second are counted over this much wall time
LATENCY_SAMPLES = 2000
ENDED_LINGER_S = 30.0  # an ended stream stays in the many-stream table this long
REFRESH_S = 0.25  # at most four refreshes a second
IDLE_REFRESH_S = 1.0  # redraw this often even when no event came (rates decay)
CLIPPING_WARN = 0.001  # warn when more than 0.1 % of samples sit at full scale
QUIET_DBFS = -45.0
TALKING_RATIO = 0.5  # below this share of speech a window is scored, but the line says so
QUIT_HINT = "q or Ctrl-C quits"

# ITU-T P.800 absolute category rating: a continuous MOS is given the category of the ACR
# score it rounds to (5 excellent, 4 good, 3 fair, 2 poor, 1 bad).
ACR_CATEGORIES = (
    (4.5, "excellent", "bold bright_green"),
    (3.5, "good", "green"),
    (2.5, "fair", "yellow"),
    (1.5, "poor", "dark_orange"),
    (-math.inf, "bad", "bold red"),
)
NO_SPEECH_STYLE = "dim"


def acr_category(mos: float) -> tuple[str, str]:
    """The P.800 ACR category of ``mos`` and its colour: ``("good", "green")``."""
    for lower, label, style in ACR_CATEGORIES:
        if mos >= lower:
            return label, style
    raise ValueError(f"MOS {mos!r} is not a number")


def _category_style(mos: float) -> str:
    return acr_category(mos)[1]


@dataclass
class StreamView:
    """What the dashboard knows about one stream."""

    stream_id: str
    started_at: float
    mos: float | None = None
    mos_smoothed: float | None = None
    no_speech: bool = False
    speech_ratio: float | None = None
    level_dbfs: float | None = None
    clipping_ratio: float = 0.0
    t_end: float = 0.0
    windows: int = 0
    history: deque = field(default_factory=deque)
    degraded: bool = False
    last_alert: dict | None = None
    summary: dict | None = None
    ended_at: float | None = None
    source: str | None = None
    changes: int = 0  # bumped by every event for this stream; keys the cached table row
    row_cache: tuple | None = None

    @property
    def duration(self) -> float:
        if self.summary and self.summary.get("duration_s") is not None:
            return float(self.summary["duration_s"])
        return self.t_end


@dataclass
class DashboardState:
    """Everything the views draw, folded from events; ``now`` is a monotonic wall clock."""

    model_name: str
    single_stream: bool
    streams: dict[str, StreamView] = field(default_factory=dict)
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    arrivals: deque = field(default_factory=deque)
    connection: dict | None = None
    stats: dict | None = None
    stats_at: float = -math.inf
    now: float = field(default_factory=time.monotonic)
    first_event_at: float | None = None
    version: int = 0

    def apply(self, event: dict[str, Any], now: float | None = None) -> None:
        """Fold one event (the JSON form) into the state; unknown events are ignored."""
        # events may come from a remote server: no string of theirs reaches the terminal raw
        event = {key: printable(value) if isinstance(value, str) else value for key, value in event.items()}
        self.now = time.monotonic() if now is None else now
        if self.first_event_at is None:
            self.first_event_at = self.now
        kind = event.get("type")
        if kind == "connection":
            self.connection = {"state": event.get("state", ""), "detail": event.get("detail", "")}
        elif kind == "stats":
            self.stats, self.stats_at = dict(event), self.now
            if event.get("model_name"):
                self.model_name = str(event["model_name"])
        elif kind == "stream_started":
            view = self._stream(event["stream_id"], restart=True)
            view.source = event.get("source")
        elif kind == "score":
            self._score(event)
        elif kind == "alert":
            view = self._stream(event["stream_id"])
            view.last_alert = dict(event)
            view.degraded = event.get("state") == "degraded"
        elif kind == "stream_ended":
            view = self._stream(event["stream_id"])
            view.summary = dict(event)
            view.ended_at = self.now
        else:
            return
        if kind != "stats" and kind != "connection":
            self.streams[event["stream_id"]].changes += 1
        self.version += 1
        self._prune()

    def tick(self, now: float) -> None:
        """Advance the wall clock: rates decay and ended streams leave the table."""
        self.now = now
        self._prune()

    def _stream(self, stream_id: str, restart: bool = False) -> StreamView:
        view = self.streams.get(stream_id)
        if view is None or (restart and view.ended_at is not None):
            view = StreamView(stream_id=stream_id, started_at=self.now)
            self.streams[stream_id] = view
        return view

    def _score(self, event: dict[str, Any]) -> None:
        view = self._stream(event["stream_id"])
        no_speech = bool(event.get("no_speech")) or event.get("mos") is None
        view.no_speech = no_speech
        view.mos = None if no_speech else float(event["mos"])
        if event.get("mos_smoothed") is not None:
            view.mos_smoothed = float(event["mos_smoothed"])
        view.speech_ratio = event.get("speech_ratio")
        view.level_dbfs = event.get("level_dbfs")
        view.clipping_ratio = float(event.get("clipping_ratio") or 0.0)
        view.t_end = float(event.get("t_end", view.t_end))
        view.windows += 1
        view.history.append((view.t_end, view.mos))
        while view.history and view.history[0][0] <= view.t_end - HISTORY_S:
            view.history.popleft()
        if event.get("latency_ms") is not None:
            self.latencies.append(float(event["latency_ms"]))
        self.arrivals.append(self.now)

    def _prune(self) -> None:
        while self.arrivals and self.arrivals[0] <= self.now - RATE_WINDOW_S:
            self.arrivals.popleft()
        if self.single_stream:
            return
        gone = [
            sid
            for sid, v in self.streams.items()
            if v.ended_at is not None and self.now - v.ended_at > ENDED_LINGER_S
        ]
        for sid in gone:
            del self.streams[sid]

    def _fresh_stats(self, key: str):
        """A figure from the engine's own ``stats`` event, while one is recent."""
        if self.stats is None or self.now - self.stats_at > 2 * RATE_WINDOW_S:
            return None
        return self.stats.get(key)

    @property
    def active_streams(self) -> int:
        engine = self._fresh_stats("active_streams")
        if engine is not None:
            return int(engine)
        return sum(1 for v in self.streams.values() if v.ended_at is None)

    def windows_per_second(self) -> float:
        engine = self._fresh_stats("windows_per_second")
        if engine is not None:
            return float(engine)
        if self.first_event_at is None:
            return 0.0
        span = min(RATE_WINDOW_S, max(self.now - self.first_event_at, 1.0))
        return sum(1 for t in self.arrivals if t > self.now - RATE_WINDOW_S) / span

    def latency_percentiles(self) -> tuple[float, float] | None:
        """(p50, p99) of the recent events' ``latency_ms``, nearest-rank."""
        p50, p99 = self._fresh_stats("latency_p50_ms"), self._fresh_stats("latency_p99_ms")
        if p50 is not None and p99 is not None:
            return float(p50), float(p99)
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        n = len(ordered)
        return tuple(ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in (0.50, 0.99))

    def rows(self) -> list[StreamView]:
        """Streams, worst smoothed MOS first; streams not yet scored, then ended ones, last."""

        def key(v: StreamView):
            scored = v.mos_smoothed is not None
            return (v.ended_at is not None, not scored, v.mos_smoothed if scored else 0.0, v.stream_id)

        return sorted(self.streams.values(), key=key)

    def focus(self) -> StreamView | None:
        """The stream the single-stream view shows: the newest live one, else the newest."""
        if not self.streams:
            return None
        live = [v for v in self.streams.values() if v.ended_at is None]
        return max(live or self.streams.values(), key=lambda v: v.started_at)


# ---------------------------------------------------------------- rendering


def _fmt_mos(mos: float | None) -> Text:
    if mos is None:
        return Text("—", style=NO_SPEECH_STYLE)
    return Text(f"{mos:.2f}", style=_category_style(mos))


def _fmt_duration(seconds: float) -> str:
    s = int(seconds)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _connection_line(state: DashboardState) -> Text | None:
    conn = state.connection
    if conn is None:
        return None
    styles = {"connected": "green", "reconnecting": "yellow", "connecting": "yellow"}
    style = styles.get(conn["state"], "bold red")
    line = Text("● ", style=style)
    line.append(conn["state"], style=style)
    if conn["detail"]:
        line.append(f"  {conn['detail']}", style="dim" if conn["state"] == "connected" else style)
    return line


def _alert_text(view: StreamView) -> Text:
    alert = view.last_alert
    if alert is None:
        return Text("no alert", style="dim")
    degraded = alert.get("state") == "degraded"
    text = Text("⚠ DEGRADED" if degraded else "✓ recovered", style="bold red" if degraded else "green")
    details = []
    if alert.get("t") is not None:
        details.append(f"at {_fmt_duration(float(alert['t']))}")
    if alert.get("mos_smoothed") is not None:
        details.append(f"smoothed {float(alert['mos_smoothed']):.2f}")
    if alert.get("threshold") is not None:
        details.append(f"threshold {float(alert['threshold']):.2f}")
    if details:
        text.append("  " + ", ".join(details), style="dim")
    return text


def _meter(fraction: float, width: int, style: str) -> Text:
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    return bar


def _meter_width(width: int) -> int:
    # Room for the label, the figure and a warning such as "  CLIPPING 12.3%".
    return min(max(width - 38, 4), 40)


def _level_line(view: StreamView, width: int) -> Text:
    line = Text().append("level   ", style="bold")
    if view.level_dbfs is None:
        return line.append("—", style="dim")
    level = float(view.level_dbfs)
    style = "red" if level > -3 else "yellow" if level > -12 else "green"
    line.append_text(_meter((level + 60.0) / 60.0, _meter_width(width), style))
    line.append(f" {level:5.1f} dBFS")
    if view.clipping_ratio > CLIPPING_WARN:
        line.append(f"  CLIPPING {view.clipping_ratio:.1%}", style="bold red reverse")
    elif level < QUIET_DBFS:
        line.append("  quiet", style="yellow")
    return line


def _speech_line(view: StreamView, width: int) -> Text:
    line = Text().append("speech  ", style="bold")
    if view.speech_ratio is None:
        return line.append("—", style="dim")
    ratio = float(view.speech_ratio)
    line.append_text(_meter(ratio, _meter_width(width), "cyan"))
    line.append(f" {ratio:5.0%}     ")
    if view.no_speech:
        line.append("  too little to score", style="dim")
    else:
        line.append("  talking" if ratio >= TALKING_RATIO else "  some speech", style="cyan")
    return line


def _trend_axis(width: int, label: str = "last 2 min ") -> Text:
    """The time scale under the single view's trend line."""
    axis = Text(" " * len(label), no_wrap=True)
    return axis.append_text(time_axis(max(width - len(label), 1), HISTORY_S, style="dim"))


def _trend_line(view: StreamView, width: int, label: str = "last 2 min ") -> Text:
    line = Text().append(label, style="bold")
    line.append_text(
        sparkline(
            view.history,
            max(width - len(label), 1),
            span=HISTORY_S,
            end=view.t_end,
            style_for=_category_style,
        )
    )
    return line


def render_single(state: DashboardState, width: int) -> RenderableType:
    """The single-stream view: large MOS, smoothed MOS, trend, level, speech, latest alert."""
    view = state.focus()
    inner = max(width - 4, 1)  # panel border and padding
    name = "waiting for audio" if view is None else view.stream_id
    if view is not None and view.source and view.source != view.stream_id:
        name += f" ({view.source})"
    title = f"JSQA · {name} · model {state.model_name}"
    parts: list[RenderableType] = []
    conn = _connection_line(state)
    if conn is not None:
        parts.append(conn)
    if view is None:
        parts.append(Text("waiting for the first window…", style="dim"))
        return Panel(Group(*parts), title=title, title_align="left", subtitle=QUIT_HINT,
                     subtitle_align="right", width=width)

    if view.mos is None:
        # before the first window there is nothing to judge yet; after it, too little speech
        label = "waiting for the first window" if view.windows == 0 else "no speech"
        style, figure = NO_SPEECH_STYLE, "-.--"
    else:
        label, style = acr_category(view.mos)
        figure = f"{view.mos:.2f}"
    summary = Text()
    summary.append("MOS ", style="bold")
    summary.append(figure, style=style)
    summary.append(f"  {label}", style=style)
    summary.append("\nsmoothed ", style="bold")
    summary.append_text(_fmt_mos(view.mos_smoothed))
    if view.mos_smoothed is not None:
        summary.append(f" ({acr_category(view.mos_smoothed)[0]})", style=_category_style(view.mos_smoothed))
    summary.append(f"\ntime {_fmt_duration(view.t_end)} · {view.windows} windows", style="dim")

    big = figure.replace("-.--", "-.-")
    if inner >= big_width(big) + 26:
        top = Table.grid(padding=(0, 3))
        top.add_row(big_text(big, style), summary)
        parts.append(top)
    elif inner >= big_width(big):
        parts.extend([big_text(big, style), summary])
    else:
        parts.append(summary)
    parts.append(Text(""))
    parts.append(_trend_line(view, inner))
    parts.append(_trend_axis(inner))
    parts.append(_level_line(view, inner))
    parts.append(_speech_line(view, inner))
    parts.append(Text().append("alert   ", style="bold").append_text(_alert_text(view)))
    if view.summary is not None:
        s = view.summary
        ended = Text(f"call ended · {_fmt_duration(view.duration)}", style="bold")
        if s.get("mean_mos") is not None:
            ended.append(" · mean ")
            ended.append_text(_fmt_mos(float(s["mean_mos"])))
        if s.get("worst_mos") is not None:
            ended.append(" · worst ")
            ended.append_text(_fmt_mos(float(s["worst_mos"])))
        parts.append(ended)
    return Panel(Group(*parts), title=title, title_align="left", subtitle=QUIT_HINT, subtitle_align="right",
                 width=width)


# Columns of the many-stream table, in the order they are given up when the terminal is
# narrow (last first), with their widths.
_MANY_COLUMNS = (
    ("stream", "stream", 6),
    ("mos", "MOS", 4),
    ("smoothed", "smooth", 6),
    ("alert", "alert", 9),
    ("trend", "last 2 min", 10),
    ("duration", "time", 7),
    ("speech", "speech", 6),
)
_STREAM_ID_MAX = 24
_TREND_MAX = 60


def _many_columns(width: int, id_width: int) -> dict[str, int]:
    """The columns that fit in ``width`` and their widths."""
    widths = {key: w for key, _, w in _MANY_COLUMNS}
    widths["stream"] = min(max(id_width, widths["stream"]), _STREAM_ID_MAX)
    keys = [key for key, _, _ in _MANY_COLUMNS]

    def need(ks):  # a leading space, then two spaces between columns
        return sum(widths[k] for k in ks) + 2 * len(ks) - 1

    while len(keys) > 2 and need(keys) > width:
        keys.pop()
    if need(keys) > width:  # even stream + MOS do not fit: shorten the stream id
        widths["stream"] = max(width - widths["mos"] - 3, 1)
    if "trend" in keys:
        widths["trend"] += min(max(width - need(keys), 0), _TREND_MAX - widths["trend"])
    return {k: widths[k] for k in keys}


_RIGHT_ALIGNED = ("mos", "smoothed", "duration", "speech")


def _table_line(cells: dict[str, Text], columns: dict[str, int]) -> Text:
    """One table line of fixed-width cells. Drawn as plain text because a rich ``Table``
    costs ten times more to render, and the widths are already known."""
    line = Text(" ", no_wrap=True)
    for i, (key, width) in enumerate(columns.items()):
        cell = cells[key]
        cell.overflow = "ellipsis"
        cell.align("right" if key in _RIGHT_ALIGNED else "left", width)
        if i:
            line.append("  ")
        line.append_text(cell)
    return line


def _row_cells(view: StreamView, columns: dict[str, int]) -> dict[str, Text]:
    ended = view.ended_at is not None
    cells = {
        "stream": Text(view.stream_id, style="dim" if ended else "bold"),
        "mos": _fmt_mos(view.mos),
        "smoothed": _fmt_mos(view.mos_smoothed),
        "duration": Text(_fmt_duration(view.duration)),
        "speech": Text("—" if view.speech_ratio is None else f"{float(view.speech_ratio):.0%}"),
    }
    if ended:
        cells["alert"] = Text("ended", style="dim")
    elif view.degraded:
        cells["alert"] = Text("DEGRADED", style="bold red")
    elif view.last_alert is not None:
        cells["alert"] = Text("recovered", style="green")
    else:
        cells["alert"] = Text("ok", style="dim green")
    if "trend" in columns:
        cells["trend"] = sparkline(
            view.history, columns["trend"], span=HISTORY_S, end=view.t_end, style_for=_category_style
        )
    return cells


def _row_line(view: StreamView, columns: dict[str, int]) -> Text:
    """A stream's table line, redrawn only when an event changed the stream (about once
    a second) or the columns changed, not on every refresh."""
    key = (view.changes, tuple(columns.items()))
    if view.row_cache is None or view.row_cache[0] != key:
        view.row_cache = (key, _table_line(_row_cells(view, columns), columns))
    return view.row_cache[1]


def _header(state: DashboardState) -> Text:
    text = Text("JSQA", style="bold")
    active = state.active_streams
    text.append(f" · {active} active stream{'' if active == 1 else 's'}")
    text.append(f" · {state.windows_per_second():.1f} windows/s")
    lat = state.latency_percentiles()
    text.append(" · latency " + (f"p50 {lat[0]:.0f} ms p99 {lat[1]:.0f} ms" if lat else "—"))
    text.append(f" · model {state.model_name}", style="cyan")
    return text


def render_many(state: DashboardState, width: int, height: int | None = None) -> RenderableType:
    """The many-stream view: a header line and one row per stream, worst smoothed MOS first."""
    parts: list[RenderableType] = [_header(state)]
    conn = _connection_line(state)
    if conn is not None:
        parts.append(conn)
    rows = state.rows()
    if not rows:
        parts.append(Text("no streams yet", style="dim"))
        parts.append(Text(QUIT_HINT, style="dim"))
        return Group(*parts)
    columns = _many_columns(width, max(len(v.stream_id) for v in rows))
    headings = {key: Text(title, style="bold") for key, title, _ in _MANY_COLUMNS}
    lines = [_table_line(headings, columns)]
    lines.append(Text(" " + "─" * (sum(columns.values()) + 2 * len(columns) - 2), style="dim"))
    # The header, connection, heading and rule lines and the quit hint leave this many rows for streams.
    room = None if height is None else max(height - len(parts) - 3, 2)
    shown = rows if room is None or len(rows) <= room else rows[: room - 1]
    lines.extend(_row_line(view, columns) for view in shown)
    if len(shown) < len(rows):
        lines.append(Text(f" … {len(rows) - len(shown)} more streams, all scoring better", style="dim"))
    table = Text("\n").join(lines)
    table.no_wrap = True  # each line already fits: spare rich the line-wrapping pass
    parts.append(table)
    parts.append(Text(QUIT_HINT, style="dim"))
    return Group(*parts)


def render(state: DashboardState, width: int, height: int | None = None) -> RenderableType:
    """Draw ``state`` for a terminal ``width`` columns wide (and ``height`` rows, if known)."""
    if state.single_stream:
        return render_single(state, width)
    return render_many(state, width, height)


# ---------------------------------------------------------------- the live loop


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, on_key: Callable[[str], None]):
    """Deliver key presses while stdin is a terminal in cbreak mode; restore it after."""
    if not _stdin_is_tty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: on_key(os.read(fd, 64).decode(errors="ignore")))
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]):
    """Route Ctrl-C to ``handler`` (a clean stop) instead of cancelling the program."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (RuntimeError, ValueError):  # not the main thread: leave Ctrl-C alone
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)


async def _consume(events: AsyncIterator[dict], state: DashboardState) -> None:
    async for event in events:
        state.apply(event)


async def run_dashboard(
    events: AsyncIterator[dict],
    *,
    model_name: str,
    single_stream: bool,
    console: Console | None = None,
) -> DashboardState:
    """Show ``events`` live until they end or the user presses ``q`` or Ctrl-C.

    Redraws at most four times a second. The last frame stays on screen. ``events`` is
    closed on the way out (closing its sockets or devices); an error it raised is re-raised
    after the terminal is restored. Returns the final state.
    """
    console = console or Console()
    state = DashboardState(model_name=model_name, single_stream=single_stream)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_key(keys: str) -> None:
        if "q" in keys.lower():
            stop.set()

    consumer = asyncio.create_task(_consume(events, state))
    stopper = asyncio.create_task(stop.wait())
    try:
        with (
            _keys(loop, on_key),
            _sigint(loop, stop.set),
            Live(
                render(state, console.width, console.height),
                console=console,
                auto_refresh=False,
                transient=False,
                vertical_overflow="crop",
            ) as live,
        ):
            drawn_version, drawn_at = -1, -math.inf
            while not (consumer.done() or stop.is_set()):
                await asyncio.wait({consumer, stopper}, timeout=REFRESH_S)
                state.tick(time.monotonic())
                if state.version != drawn_version or state.now - drawn_at >= IDLE_REFRESH_S:
                    live.update(render(state, console.width, console.height), refresh=True)
                    drawn_version, drawn_at = state.version, state.now
            live.update(render(state, console.width, console.height), refresh=True)
    finally:
        for task in (consumer, stopper):
            task.cancel()
        await asyncio.gather(consumer, stopper, return_exceptions=True)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if not consumer.cancelled() and consumer.exception() is not None:
        raise consumer.exception()
    return state
