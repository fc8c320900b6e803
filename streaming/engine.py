"""The asyncio engine: per-stream windows, batched scoring off the loop, rolling MOS,
alerts, and fan-out of immutable events to bounded subscriber queues.

Any scorer with ``score_windows``, ``window_seconds``, ``hop_seconds`` and
``sample_rate`` works (``jsqa.scorer.Scorer`` in practice). Windows are scored earliest
deadline first (``schedule``), so real-time streams go before catch-up work; a queued
window is a place in its stream's buffer (``window``), read into a reused batch array
only when scored.

When the scorer has split parts (``scorer.split``) whose chunk is the engine's hop, each
hop of each stream is encoded once, the new hops of a batch in one call, and a window
is scored by the light head from its chunks' cached embeddings: the same number as the
whole model on that window, at about a third of the encoder work for 3 s windows and a
1 s hop. The hops before a stream's first window are encoded as they arrive, so a call's
first window costs no more than any other and calls starting together do not pile up
three hops each at once. Windows off the hop grid (a stream's tail, a stream shorter than
a window) and models without chunks are scored whole. The VAD and the level and clipping
meters likewise measure each 1 s hop once and combine a window from its hops.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from jsqa.audio import SAMPLE_RATE
from jsqa.levels import VAD_BLOCK_SECONDS, BlockLevels, window_levels

from .alerts import AlertTracker
from .events import Alert, ScoreEvent, Stats, StreamEnded, StreamStarted
from .schedule import DeadlineQueue, StreamClock
from .window import Windower

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
LEVEL_FLOOR_DBFS = -120.0


class StreamError(Exception):
    """A stream that cannot be opened or fed (duplicate id, unknown id)."""


@dataclass
class _Window:
    stream: _Stream
    start: int  # first sample, stream time
    length: int
    completed: float  # time.monotonic() when its last sample arrived
    encode_only: bool = False  # a hop before the stream's first window: encoded, not scored


class _Stream:
    def __init__(self, stream_id: str, source: str, engine: Engine, lossless: bool):
        self.id = stream_id
        self.source = source
        self.lossless = lossless
        self.windower = Windower(engine.window, engine.hop)
        self.clock = StreamClock(SAMPLE_RATE)
        self.room = asyncio.Event()  # set when scoring frees some of this stream's backlog
        self.started = time.time()
        self.pending = 0
        self.ended = False
        self.end_reason = ""
        self.windows = 0
        self.scored = 0
        self.smoothed: float | None = None
        # hop start -> embedding / levels of the hop starting there; only the scoring thread uses them
        self.embeddings: dict[int, np.ndarray] = {}
        self.levels: dict[int, BlockLevels] = {}
        self.recent: collections.deque[float] = collections.deque(maxlen=engine.mean_windows)
        self.mos_sum = 0.0
        self.worst: float | None = None
        self.latest: ScoreEvent | None = None
        self.alerts = (
            AlertTracker(engine.alert_threshold, engine.alert_seconds)
            if engine.alert_threshold is not None
            else None
        )

    def summary(self) -> dict:
        latest = self.latest
        return {
            "stream_id": self.id,
            "source": self.source,
            "duration_s": self.windower.total / SAMPLE_RATE,
            "windows": self.windows,
            "mos": latest.mos if latest else None,
            "mos_smoothed": self.smoothed,
            "mos_mean": (sum(self.recent) / len(self.recent)) if self.recent else None,
            "speech_ratio": latest.speech_ratio if latest else None,
            "level_dbfs": latest.level_dbfs if latest else None,
            "degraded": bool(self.alerts and self.alerts.degraded),
        }


class Subscription:
    """An async iterator of event dicts with a bounded queue that drops its oldest.

    The engine only ever appends without waiting, so a slow reader loses events
    (counted in ``dropped``) instead of slowing anything down.
    """

    def __init__(self, engine: Engine, stream_id: str | None, types: set[str] | None, maxsize: int):
        self._engine = engine
        self.stream_id = stream_id
        self.types = types
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False
        self._items: collections.deque[dict] = collections.deque()
        self._ready = asyncio.Event()

    def wants(self, event: dict) -> bool:
        if self.types is not None and event["type"] not in self.types:
            return False
        if self.stream_id is None:
            return True
        return event.get("stream_id") == self.stream_id

    def offer(self, event: dict) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            self._engine.events_dropped += 1
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        subs = self._engine._subscriptions.get(self.stream_id)
        if subs is not None:
            subs.discard(self)
            if not subs and self.stream_id is not None:
                del self._engine._subscriptions[self.stream_id]
        self._ready.set()

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class Engine:
    """Scores any number of live streams with one model.

    Use as ``async with Engine(scorer) as engine:``; then ``open_stream``, ``push``
    16 kHz float32 samples, ``end_stream``; read events from ``subscribe()``.
    """

    def __init__(
        self,
        scorer,
        *,
        smoothing: float = 0.3,
        mean_windows: int = 10,
        min_speech_ratio: float = 0.2,
        max_pending: int = 1024,
        max_backlog_seconds: float = 10.0,
        max_batch: int = 32,
        catchup_batch: int = 1,
        queue_size: int = 1024,
        alert_threshold: float | None = None,
        alert_seconds: float = 5.0,
        stats_interval: float = 1.0,
        hop_seconds: float | None = None,
    ):
        if int(scorer.sample_rate) != SAMPLE_RATE:
            raise ValueError(f"the model expects {scorer.sample_rate} Hz; the engine runs at {SAMPLE_RATE} Hz")
        self.scorer = scorer
        self.model_name = str(getattr(scorer, "name", "model"))
        self.window = round(float(scorer.window_seconds) * SAMPLE_RATE)
        # a longer hop than the model's scores fewer overlapping windows: more streams per core
        self.hop = round(float(hop_seconds or scorer.hop_seconds) * SAMPLE_RATE)
        self.smoothing = smoothing
        self.mean_windows = mean_windows
        self.min_speech_ratio = min_speech_ratio
        self.max_pending = max_pending
        self.max_backlog = round(max_backlog_seconds * SAMPLE_RATE)
        self.max_batch = max_batch
        self.catchup_batch = min(catchup_batch, max_batch)
        self.queue_size = queue_size
        self.alert_threshold = alert_threshold
        self.alert_seconds = alert_seconds
        self.stats_interval = stats_interval
        split = getattr(scorer, "split", None)
        self.split = split if split is not None and split.streams(self.window, self.hop) else None
        # the VAD and meters measure each hop once when a hop is one of their blocks
        self.hop_levels = self.hop == round(VAD_BLOCK_SECONDS * SAMPLE_RATE) and self.window % self.hop == 0

        self.windows_scored = 0
        self.windows_no_speech = 0
        self.windows_dropped = 0
        self.events_dropped = 0
        self.streams_total = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.inference_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.inference_sum = 0.0
        self._latencies: collections.deque[float] = collections.deque(maxlen=4096)
        self._recent_batches: collections.deque[tuple[float, int]] = collections.deque()

        self._streams: dict[str, _Stream] = {}
        self._queue: DeadlineQueue[_Window] = DeadlineQueue()
        # the windows of one model call are copied here, so batches allocate nothing
        self._batch = np.zeros((max_batch, self.window), dtype=np.float32)
        if self.split is not None:
            self._chunks = np.zeros((max_batch * (self.window // self.hop), self.hop), dtype=np.float32)
        # keyed by stream id (None: all streams) so publishing costs per listener, not per socket
        self._subscriptions: dict[str | None, set[Subscription]] = {None: set()}
        self._work = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsqa-score")
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Engine:
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def start(self) -> None:
        _return_freed_memory()
        self._tasks = [asyncio.create_task(self._score_loop()), asyncio.create_task(self._stats_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for subs in list(self._subscriptions.values()):
            for sub in list(subs):
                sub.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def drain(self) -> None:
        """Wait until every stream has ended and every window has been published."""
        while self._streams:
            await asyncio.sleep(0.01)

    # -- streams -----------------------------------------------------------------
    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def open_stream(self, stream_id: str, source: str = "", lossless: bool = False) -> None:
        """Start a stream. When the engine's queue is full, live streams
        (``lossless=False``) lose their oldest windows; lossless ones (files) never do."""
        if stream_id in self._streams:
            raise StreamError(f"stream_id {stream_id!r} is already streaming")
        self._streams[stream_id] = _Stream(stream_id, source, self, lossless)
        self.streams_total += 1
        self._publish(StreamStarted(stream_id, source, time.time()).to_dict())

    async def push(self, stream_id: str, samples: np.ndarray) -> None:
        """Add 16 kHz float32 mono samples to a stream.

        Waits while the stream holds more than ``max_backlog_seconds`` of audio not yet
        scored: a server awaiting this stops reading that client's socket, so a client
        sending too fast is slowed by TCP instead of filling the server's memory."""
        stream = self._get(stream_id)
        if stream.ended:
            raise StreamError(f"stream {stream_id!r} has ended")
        while stream.windower.backlog > self.max_backlog:
            stream.room.clear()
            await stream.room.wait()
        now = time.monotonic()
        stream.clock.arrive(now, len(samples))
        before = stream.windower.total
        starts = stream.windower.push(samples)
        if self.split is not None:
            # hops that end before the first window does (the first window encodes its last)
            first_end = (before // self.hop + 1) * self.hop
            for end in range(first_end, min(stream.windower.total, self.window - 1) + 1, self.hop):
                stream.windower.hold(end - self.hop)
                self._enqueue(_Window(stream, end - self.hop, self.hop, now, encode_only=True))
        for start in starts:
            self._enqueue(_Window(stream, start, self.window, now))

    def end_stream(self, stream_id: str, reason: str = "end") -> None:
        """End a stream: its unscored tail is scored, then ``stream_ended`` follows."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended:
            return
        stream.ended = True
        stream.end_reason = reason
        tail = stream.windower.flush()
        if tail is not None:
            self._enqueue(_Window(stream, *tail, time.monotonic()))
        self._maybe_finish(stream)

    def streams(self) -> list[dict]:
        return [s.summary() for s in self._streams.values()]

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise StreamError(f"no stream {stream_id!r}") from None

    def _enqueue(self, window: _Window) -> None:
        if len(self._queue) >= self.max_pending:
            # the most overdue live window goes: a live listener wants the present
            oldest_live = self._queue.remove_earliest(lambda w: not w.stream.lossless)
            if oldest_live is not None:
                self._release(oldest_live)
                self._drop([oldest_live])
        window.stream.pending += 1
        self._queue.put(window.stream.clock.due(window.start + window.length), window)
        self._work.set()

    @staticmethod
    def _release(window: _Window) -> None:
        """The window's audio is no longer needed; its stream may take more."""
        window.stream.windower.release(window.start)
        window.stream.room.set()

    def _drop(self, windows: list[_Window]) -> None:
        for window in windows:
            # a dropped early hop is only encoded later, with the first window
            self.windows_dropped += not window.encode_only
            window.stream.pending -= 1
            self._maybe_finish(window.stream)

    def _maybe_finish(self, stream: _Stream) -> None:
        if not stream.ended or stream.pending or self._streams.get(stream.id) is not stream:
            return
        del self._streams[stream.id]
        mean = stream.mos_sum / stream.scored if stream.scored else None
        ended = StreamEnded(
            stream.id, stream.windower.total / SAMPLE_RATE, mean, stream.worst, stream.windows, stream.end_reason
        )
        self._publish(ended.to_dict())

    # -- subscribers ---------------------------------------------------------------
    def subscribe(
        self, stream_id: str | None = None, types: set[str] | None = None, maxsize: int | None = None
    ) -> Subscription:
        """Events of one stream (or all), optionally only some types (``{"alert"}``).
        A subscriber to all streams gets the current ``stats`` at once, so it knows the
        model and the load before the next periodic update."""
        sub = Subscription(self, stream_id, types, maxsize or self.queue_size)
        self._subscriptions.setdefault(stream_id, set()).add(sub)
        now = Stats(**self.stats()).to_dict()
        if sub.wants(now):
            sub.offer(now)
        return sub

    def _publish(self, event: dict) -> None:
        stream_id = event.get("stream_id")
        listeners = list(self._subscriptions[None])
        if stream_id is not None:
            listeners += self._subscriptions.get(stream_id, ())
        for sub in listeners:
            if sub.wants(event):
                sub.offer(event)

    # -- scoring -----------------------------------------------------------------
    async def _score_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            self._work.clear()
            while self._queue:
                batch = self._next_batch()
                for row, window in zip(self._batch, batch):
                    window.stream.windower.read(window.start, window.length, row)
                    self._release(window)
                began = time.monotonic()
                try:
                    results = await loop.run_in_executor(self._executor, self._analyse, self._batch, batch)
                except Exception:
                    # a failing model call loses this batch only; the engine keeps serving
                    log.exception("scoring %d windows failed; they are dropped", len(batch))
                    self._drop(batch)
                    continue
                done = time.monotonic()
                self._observe(self.inference_counts, done - began)
                self.inference_sum += done - began
                self._recent_batches.append((done, sum(not w.encode_only for w in batch)))
                for window, result in zip(batch, results):
                    if window.encode_only:
                        window.stream.pending -= 1
                        self._maybe_finish(window.stream)
                    else:
                        self._publish_score(window, *result, done)

    def _next_batch(self) -> list[_Window]:
        """The windows due soon, earliest first; when none is, a little catch-up work.

        A window of a stream sent in real time is due one frame after it completes;
        "soon" is one hop, so any frame size up to a hop counts as real time. A model
        call cannot be interrupted and on a CPU costs the same per window whatever the
        batch, so while live streams are open catch-up work goes ``catchup_batch``
        windows at a time: a live window arriving meanwhile waits for that little only.
        """
        batch = self._queue.take(self.max_batch, due_by=time.monotonic() + self.hop / SAMPLE_RATE)
        if batch:
            return batch
        live = any(not s.lossless for s in self._streams.values())
        return self._queue.take(self.catchup_batch if live else self.max_batch)

    def _analyse(self, batch: np.ndarray, windows: list[_Window]) -> list[tuple]:
        """Runs in the worker thread: levels and VAD for every window (row ``i`` of
        ``batch`` holds ``windows[i]``), then the model for the windows with speech:
        from per-hop embeddings where the engine splits, else one whole-window call per
        window length (all full windows share one). Encode-only hops get ``None``."""
        lengths = [w.length for w in windows]
        features = [self._levels(w, row[: w.length]) for w, row in zip(windows, batch)]
        mos: list[float | None] = [None] * len(lengths)
        speech = [i for i, f in enumerate(features) if f is not None and f[0] >= self.min_speech_ratio]
        on_grid = [i for i in speech if self._on_hop_grid(windows[i])]
        hops = [i for i, w in enumerate(windows) if w.encode_only]
        if on_grid or hops:
            for i, score in zip(on_grid, self._score_from_hops(batch, windows, on_grid, hops)):
                mos[i] = float(score)
        by_length: dict[int, list[int]] = {}
        for i in speech:
            if not self._on_hop_grid(windows[i]):
                by_length.setdefault(lengths[i], []).append(i)
        for length, indices in by_length.items():
            # the common case, every window full and with speech, is a view: no copy
            rows = batch[: len(indices)] if indices == list(range(len(indices))) else batch[indices]
            scores = self.scorer.score_windows(rows[:, :length])
            for i, score in zip(indices, np.asarray(scores, dtype=np.float64)):
                mos[i] = float(score)
        return [None if f is None else (m, *f) for m, f in zip(mos, features)]

    def _on_hop_grid(self, window: _Window) -> bool:
        return self.split is not None and window.length == self.window and window.start % self.hop == 0

    def _levels(self, window: _Window, x: np.ndarray) -> tuple[float, float, float] | None:
        """``(speech_ratio, level_dbfs, clipping_ratio)`` of a window (None for an encode-only
        hop), from its hops' measurements where they are blocks: each hop measured once."""
        full = window.length == self.window and window.start % self.hop == 0
        if not (self.hop_levels and (full or window.encode_only)):
            return None if window.encode_only else window_levels([BlockLevels.measure(x)])
        stream, hop = window.stream, self.hop
        blocks = []
        for k in range(window.length // hop):
            start = window.start + k * hop
            if start not in stream.levels:
                stream.levels[start] = BlockLevels.measure(x[k * hop : (k + 1) * hop])
            blocks.append(stream.levels[start])
        if window.encode_only:
            return None
        _forget_through(stream.levels, window.start)
        return window_levels(blocks)

    def _score_from_hops(
        self, batch: np.ndarray, windows: list[_Window], rows: list[int], hops: list[int]
    ) -> np.ndarray:
        """Scores of ``windows[i]`` for ``i`` in ``rows``: the hops not encoded yet, of
        every stream (the encode-only ``hops`` too), in one encoder call, then every window
        from its hops' embeddings."""
        hop, per_window = self.hop, self.window // self.hop
        new: dict[tuple[_Stream, int], int] = {}  # (stream, hop start) -> row of self._chunks
        for i in hops + rows:
            stream, start = windows[i].stream, windows[i].start
            for k in range(windows[i].length // hop):
                key = (stream, start + k * hop)
                if key[1] not in stream.embeddings and key not in new:
                    self._chunks[len(new)] = batch[i, k * hop : (k + 1) * hop]
                    new[key] = len(new)
        if new:
            encoded = self.split.encode_chunks(self._chunks[: len(new)])
            for (stream, start), row in new.items():
                # a copy, so a kept row does not hold the whole call's output alive
                stream.embeddings[start] = encoded[row].copy()
        if not rows:
            return np.empty(0)
        embeddings = np.stack([
            [windows[i].stream.embeddings[windows[i].start + k * hop] for k in range(per_window)] for i in rows
        ])
        done: dict[_Stream, int] = {}
        for i in rows:
            done[windows[i].stream] = max(done.get(windows[i].stream, -1), windows[i].start)
        for stream, start in done.items():
            _forget_through(stream.embeddings, start)
        return self.split.score_embeddings(embeddings)

    def _publish_score(self, window: _Window, mos, ratio, level, clipping, done: float) -> None:
        stream = window.stream
        stream.pending -= 1
        stream.windows += 1
        if mos is not None:
            stream.smoothed = mos if stream.smoothed is None else (
                self.smoothing * mos + (1 - self.smoothing) * stream.smoothed
            )
            stream.recent.append(mos)
            stream.mos_sum += mos
            stream.scored += 1
            stream.worst = mos if stream.worst is None else min(stream.worst, mos)
            self.windows_scored += 1
        else:
            self.windows_no_speech += 1
        latency = done - window.completed
        self._latencies.append(latency)
        self._observe(self.latency_counts, latency)
        self.latency_sum += latency
        level = float(level)
        event = ScoreEvent(
            stream_id=stream.id,
            t_start=window.start / SAMPLE_RATE,
            t_end=(window.start + window.length) / SAMPLE_RATE,
            mos=mos,
            mos_smoothed=stream.smoothed,
            mos_mean=(sum(stream.recent) / len(stream.recent)) if stream.recent else None,
            speech_ratio=float(ratio),
            level_dbfs=max(level, LEVEL_FLOOR_DBFS) if math.isfinite(level) else LEVEL_FLOOR_DBFS,
            clipping_ratio=float(clipping),
            latency_ms=latency * 1000.0,
            no_speech=mos is None,
        )
        stream.latest = event
        self._publish(event.to_dict())
        if stream.alerts is not None and mos is not None:
            alert: Alert | None = stream.alerts.update(stream.id, event.t_end, stream.smoothed)
            if alert is not None:
                self._publish(alert.to_dict())
        self._maybe_finish(stream)

    @staticmethod
    def _observe(counts: list[int], value: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if value <= bound:
                counts[i] += 1
                return
        counts[-1] += 1

    # -- figures -------------------------------------------------------------------
    def stats(self) -> dict:
        now = time.monotonic()
        while self._recent_batches and now - self._recent_batches[0][0] > 5.0:
            self._recent_batches.popleft()
        recent = sum(n for _, n in self._recent_batches)
        latencies = np.asarray(self._latencies)
        return {
            "active_streams": len(self._streams),
            "windows_scored": self.windows_scored,
            "windows_dropped": self.windows_dropped,
            "events_dropped": self.events_dropped,
            "windows_per_second": recent / 5.0,
            "latency_p50_ms": float(np.percentile(latencies, 50) * 1000) if len(latencies) else None,
            "latency_p99_ms": float(np.percentile(latencies, 99) * 1000) if len(latencies) else None,
            "model_name": self.model_name,
        }

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            self._publish(Stats(**self.stats()).to_dict())


def _forget_through(per_hop: dict[int, object], start: int) -> None:
    """Drop a stream's cached hops up to ``start``, the first hop of a window just scored: a
    stream's windows are scored in order, so no later window holds those hops."""
    for key in [key for key in per_hop if key <= start]:
        del per_hop[key]


def _return_freed_memory() -> None:
    """Pin glibc's mmap threshold at its default (128 KiB).

    Left adaptive, glibc raises the threshold after the first large array is freed, and
    later stream buffers come from the heap, whose high-water mark a burst then leaves
    in the process for good. Pinned, every array above 128 KiB is its own mapping,
    returned to the system when freed. Other C libraries are left alone.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
