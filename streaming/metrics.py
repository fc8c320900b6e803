"""The engine's figures in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from jsqa.sanitize import printable

from .engine import LATENCY_BUCKETS, Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    # the format's own escapes, after the sanitiser has made control characters visible
    return printable(value).replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")


def _histogram(lines: list[str], name: str, help_text: str, counts: list[int], total: float) -> None:
    samples = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, counts):
        cumulative += count
        samples.append(({"le": repr(bound)}, cumulative))
    cumulative += counts[-1]
    samples.append(({"le": "+Inf"}, cumulative))
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} histogram")
    for labels, value in samples:
        lines.append(f'{name}_bucket{{le="{labels["le"]}"}} {value}')
    lines.append(f"{name}_sum {_number(float(total))}")
    lines.append(f"{name}_count {cumulative}")


def render(engine: Engine) -> str:
    """All metrics as one text page; per-stream series carry a ``stream_id`` label."""
    streams = engine.streams()
    lines: list[str] = []
    _metric(lines, "jsqa_streams_active", "gauge", "Streams being scored now.", [({}, len(streams))])
    _metric(lines, "jsqa_streams_total", "counter", "Streams opened since start.", [({}, engine.streams_total)])
    _metric(lines, "jsqa_windows_scored_total", "counter", "Windows scored by the model.",
            [({}, engine.windows_scored)])
    _metric(lines, "jsqa_windows_no_speech_total", "counter", "Windows with too little speech to score.",
            [({}, engine.windows_no_speech)])
    _metric(lines, "jsqa_windows_dropped_total", "counter", "Windows dropped because scoring fell behind.",
            [({}, engine.windows_dropped)])
    _metric(lines, "jsqa_events_dropped_total", "counter", "Events dropped from slow subscribers' queues.",
            [({}, engine.events_dropped)])
    _metric(lines, "jsqa_stream_mos", "gauge", "Latest window MOS per stream.",
            [({"stream_id": s["stream_id"]}, s["mos"]) for s in streams if s["mos"] is not None])
    _metric(lines, "jsqa_stream_mos_smoothed", "gauge", "Smoothed MOS per stream.",
            [({"stream_id": s["stream_id"]}, s["mos_smoothed"]) for s in streams if s["mos_smoothed"] is not None])
    _metric(lines, "jsqa_stream_windows_total", "counter", "Windows published per stream.",
            [({"stream_id": s["stream_id"]}, s["windows"]) for s in streams])
    _metric(lines, "jsqa_stream_degraded", "gauge", "1 while a stream is in the degraded alert state.",
            [({"stream_id": s["stream_id"]}, int(s["degraded"])) for s in streams])
    _histogram(lines, "jsqa_score_latency_seconds", "From a window's last sample to its score event.",
               engine.latency_counts, engine.latency_sum)
    _histogram(lines, "jsqa_inference_seconds", "Duration of one batched scoring call.",
               engine.inference_counts, engine.inference_sum)
    return "\n".join(lines) + "\n"
