"""The dashboard: state folding, both views through rich's recording console, the live loop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf
from jsqa.streaming.dashboard import (
    ENDED_LINGER_S,
    DashboardState,
    acr_category,
    render,
    run_dashboard,
)
from rich.cells import cell_len
from rich.console import Console


def score(stream_id, t_end, mos, smoothed=None, **extra):
    event = {
        "type": "score",
        "stream_id": stream_id,
        "t_start": t_end - 3.0,
        "t_end": t_end,
        "mos": mos,
        "mos_smoothed": mos if smoothed is None else smoothed,
        "speech_ratio": 0.8,
        "level_dbfs": -22.0,
        "clipping_ratio": 0.0,
        "latency_ms": 20.0,
        "no_speech": mos is None,
    }
    event.update(extra)
    return event


def draw(state, width, height=None):
    console = Console(record=True, width=width, color_system="truecolor", force_terminal=True)
    console.print(render(state, width, height))
    return console


def text_of(state, width, height=None) -> str:
    return draw(state, width, height).export_text()


def colours_of(state, width, needle: str) -> set[str]:
    """Colour names of the rendered segments whose text is ``needle``."""
    console = draw(state, width)
    segments = console.render(render(state, width), console.options.update_width(width))
    return {s.style.color.name for s in segments if s.text.strip() == needle and s.style and s.style.color}


def many_state() -> DashboardState:
    state = DashboardState(model_name="jsqa-tiny", single_stream=False)
    mos_of = {"call-good": 4.2, "call-bad": 1.3, "call-fair": 2.9}
    for sid in mos_of:
        state.apply({"type": "stream_started", "stream_id": sid, "source": "ws"}, now=0.0)
    for t in range(3, 13):
        for sid, mos in mos_of.items():
            state.apply(score(sid, float(t), mos, latency_ms=float(t)), now=float(t))
    state.apply(
        {"type": "alert", "stream_id": "call-bad", "state": "degraded", "mos_smoothed": 1.3,
         "threshold": 3.0, "t": 9.0},
        now=12.0,
    )
    return state


def single_state(mos=4.46, **extra) -> DashboardState:
    state = DashboardState(model_name="jsqa-tiny", single_stream=True)
    state.apply({"type": "stream_started", "stream_id": "demo", "source": "file"}, now=0.0)
    for t in range(3, 30):
        state.apply(score("demo", float(t), mos, smoothed=mos - 0.1, **extra), now=float(t))
    return state


@pytest.mark.parametrize(
    "mos, label",
    [(5.0, "excellent"), (4.5, "excellent"), (4.49, "good"), (3.5, "good"), (3.49, "fair"),
     (2.5, "fair"), (2.0, "poor"), (1.5, "poor"), (1.49, "bad"), (1.0, "bad")],
)
def test_acr_category_is_the_rounded_p800_score(mos, label):
    assert acr_category(mos)[0] == label


def test_rows_are_sorted_worst_smoothed_mos_first_and_ended_streams_leave():
    state = many_state()
    assert [v.stream_id for v in state.rows()] == ["call-bad", "call-fair", "call-good"]
    state.apply({"type": "stream_ended", "stream_id": "call-bad", "duration_s": 12.0,
                 "mean_mos": 1.3, "worst_mos": 1.2, "windows": 10}, now=13.0)
    assert [v.stream_id for v in state.rows()] == ["call-fair", "call-good", "call-bad"]
    assert state.active_streams == 2
    state.tick(13.0 + ENDED_LINGER_S + 1)
    assert [v.stream_id for v in state.rows()] == ["call-fair", "call-good"]


def test_windows_per_second_and_latency_percentiles_come_from_the_events():
    state = DashboardState(model_name="m", single_stream=False)
    for i in range(100):  # 10 streams x 10 windows over 10 s: 10 windows a second
        state.apply(score(f"s{i % 10}", 3.0 + i // 10, 3.0, latency_ms=float(i + 1)), now=i / 10)
    assert state.windows_per_second() == pytest.approx(10.0, rel=0.05)
    assert state.latency_percentiles() == (50.0, 99.0)
    state.tick(60.0)
    assert state.windows_per_second() == 0.0


def test_engine_stats_override_figures_derived_from_events():
    state = many_state()
    state.apply({"type": "stats", "active_streams": 40, "windows_per_second": 39.5,
                 "latency_p50_ms": 11.0, "latency_p99_ms": 95.0, "model_name": "jsqa-small",
                 "windows_scored": 1, "windows_dropped": 0, "events_dropped": 0}, now=12.5)
    text = text_of(state, 120)
    assert "40 active streams" in text and "39.5 windows/s" in text
    assert "p50 11 ms p99 95 ms" in text and "model jsqa-small" in text
    state.tick(60.0)  # a stale engine figure is not shown as current
    assert "3 active streams" in text_of(state, 120)


def test_no_speech_window_shows_no_score_and_leaves_a_gap_in_the_trend():
    state = single_state(mos=3.0)
    state.apply(score("demo", 30.0, None, smoothed=2.9), now=30.0)
    view = state.focus()
    assert view.mos is None and view.no_speech and view.mos_smoothed == 2.9
    assert view.history[-1] == (30.0, None)
    text = text_of(state, 100)
    assert "no speech" in text and "MOS -.--" in text


def test_single_view_shows_mos_category_trend_level_and_alert():
    state = single_state(mos=4.46, clipping_ratio=0.02)
    state.apply({"type": "alert", "stream_id": "demo", "state": "degraded", "mos_smoothed": 2.4,
                 "threshold": 3.0, "t": 25.0}, now=29.0)
    text = text_of(state, 100)
    assert "demo (file)" in text and "model jsqa-tiny" in text
    assert "MOS 4.46  good" in text and "smoothed 4.36 (good)" in text
    assert "last 2 min" in text and "▇" in text  # 4.46 is the seventh of eight bar heights
    assert "-22.0 dBFS" in text and "CLIPPING 2.0%" in text
    assert "DEGRADED" in text and "threshold 3.00" in text
    assert "██" in text  # the large figure


@pytest.mark.parametrize("mos, colour", [(4.8, "bright_green"), (4.0, "green"), (3.0, "yellow"),
                                         (2.0, "dark_orange"), (1.2, "red")])
def test_single_view_colours_the_mos_by_category(mos, colour):
    assert colours_of(single_state(mos=mos), 100, f"{mos:.2f}") == {colour}


def test_many_view_lists_streams_worst_first_with_header_figures():
    text = text_of(many_state(), 120)
    header = text.splitlines()[0]
    assert "3 active streams" in header and "windows/s" in header and "model jsqa-tiny" in header
    assert "p50 7 ms p99 12 ms" in header
    assert text.index("call-bad") < text.index("call-fair") < text.index("call-good")
    assert "DEGRADED" in text and "last 2 min" in text and "speech" in text
    assert colours_of(many_state(), 120, "1.30") == {"red"}
    assert colours_of(many_state(), 120, "4.20") == {"green"}


@pytest.mark.parametrize(
    "width, headings",
    [(24, {"smooth"}), (40, {"smooth", "alert"}), (60, {"smooth", "alert", "last 2 min", "time"})],
)
def test_narrow_terminal_drops_columns_but_keeps_every_line_inside(width, headings):
    for state in (many_state(), single_state()):
        text = text_of(state, width)
        assert max(cell_len(line) for line in text.splitlines()) <= width
        assert "MOS" in text
    many = text_of(many_state(), width)
    assert "call-bad" in many and "1.30" in many
    table_heading = next(line for line in many.splitlines() if "stream " in line and "MOS" in line)
    optional = {"smooth", "alert", "last 2 min", "time", "speech"}
    assert {h for h in optional if h in table_heading} == headings


def test_many_view_caps_rows_to_the_terminal_height_keeping_the_worst():
    state = DashboardState(model_name="m", single_stream=False)
    for i in range(50):
        state.apply(score(f"s{i:02d}", 5.0, 1.0 + i * 0.08), now=1.0)
    text = text_of(state, 100, height=20)
    assert len(text.splitlines()) <= 20
    assert "s00" in text and "s49" not in text and "more streams" in text


def test_run_dashboard_draws_until_events_end_and_closes_them():
    closed = []

    async def events():
        try:
            yield {"type": "stream_started", "stream_id": "call-7", "source": "ws"}
            for t in (3.0, 4.0, 5.0):
                yield score("call-7", t, 1.9, smoothed=2.1)
                await asyncio.sleep(0.01)
            yield {"type": "stream_ended", "stream_id": "call-7", "duration_s": 5.0,
                   "mean_mos": 1.9, "worst_mos": 1.8, "windows": 3}
        finally:
            closed.append(True)

    console = Console(record=True, width=100)
    state = asyncio.run(run_dashboard(events(), model_name="jsqa-tiny", single_stream=True,
                                      console=console))
    assert state.focus().windows == 3 and closed == [True]
    frame = console.export_text()
    assert "MOS 1.90  poor" in frame and "call ended · 00:05" in frame


def test_run_dashboard_reraises_an_error_from_the_events():
    async def events():
        yield score("x", 3.0, 3.0)
        raise ConnectionError("server refused")

    with pytest.raises(ConnectionError, match="server refused"):
        asyncio.run(run_dashboard(events(), model_name="m", single_stream=False,
                                  console=Console(record=True, width=80)))


def test_a_stream_row_is_redrawn_when_its_scores_change():
    state = many_state()
    before = text_of(state, 120)
    assert before.index("call-bad") < before.index("call-good")
    state.apply(score("call-good", 13.0, 1.05, smoothed=1.1), now=13.0)
    after = text_of(state, 120)
    assert after.index("call-good") < after.index("call-bad")
    good_row = next(line for line in after.splitlines() if "call-good" in line)
    assert "1.05" in good_row and "1.10" in good_row and "00:13" in good_row


def test_the_demo_call_is_bundled_small_attributed_and_moves_through_its_acts():
    from jsqa.streaming.demo import ATTRIBUTION_FILE, demo_path

    from jsqa.audio import load_audio
    from jsqa.levels import frame_energies_db

    path = demo_path()
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert 40 <= info.duration <= 60 and path.stat().st_size <= 1_000_000
    attribution = (path.parent / ATTRIBUTION_FILE).read_text()
    for credit in ("LibriVox", "public domain", "CC BY 4.0", "CC0", "scripts/make_demo.py"):
        assert credit in attribution

    x = load_audio(path)
    acts = {name: x[int(a * 16000) : int(b * 16000)] for name, a, b in
            [("clean", 1, 15), ("noise", 18, 29), ("loss", 32, 43), ("recovered", 45, 55)]}
    floor = {name: np.percentile(frame_energies_db(a), 5) for name, a in acts.items()}
    assert floor["noise"] > floor["clean"] + 15  # the cafe fills the pauses
    assert floor["noise"] > floor["recovered"] + 15

    def silent_packets(a):  # share of 20 ms frames that are exactly zero
        return np.mean(np.all(a[: a.size // 320 * 320].reshape(-1, 320) == 0, axis=1))

    # lost packets are left silent; clean acts have only the short pauses between clips
    assert silent_packets(acts["loss"]) > silent_packets(acts["clean"]) + 0.1
    assert silent_packets(acts["recovered"]) < 0.05


def test_a_stream_before_its_first_window_is_waiting_not_silent():
    state = DashboardState(model_name="m", single_stream=True)
    state.apply({"type": "stream_started", "stream_id": "call", "source": "ws"}, now=0.0)
    text = text_of(state, 100)
    assert "waiting for the first window" in text and "no speech" not in text


@pytest.mark.parametrize("ratio, label", [(0.23, "some speech"), (0.5, "talking"), (0.9, "talking")])
def test_speech_line_says_talking_only_when_most_of_the_window_is_speech(ratio, label):
    text = text_of(single_state(mos=3.0, speech_ratio=ratio), 100)
    speech = next(line for line in text.splitlines() if "speech " in line and "%" in line)
    assert label in speech and ({"some speech", "talking"} - {label}).pop() not in speech


def test_both_views_say_how_to_quit():
    for state in (single_state(), many_state(), DashboardState(model_name="m", single_stream=False)):
        assert "q or Ctrl-C quits" in text_of(state, 100)


def test_the_trend_has_a_time_scale_under_it():
    lines = text_of(single_state(), 100).splitlines()
    trend = next(i for i, line in enumerate(lines) if "last 2 min" in line)
    axis = lines[trend + 1]
    assert axis.index("-2 min") == lines[trend].index("last 2 min") + len("last 2 min ")
    assert "-1 min" in axis
    # "now" ends in the sparkline's last cell, the newest window
    assert axis.rstrip(" │").endswith("now") and len(axis.rstrip(" │")) == len(lines[trend].rstrip(" │"))


HOSTILE = "MZ\u001b[2J\u001b[H"
TITLE = "\u001b]0;title\u0007"


@pytest.mark.parametrize("single", [True, False])
def test_escape_sequences_in_events_are_shown_not_obeyed(single):
    state = DashboardState(model_name="m", single_stream=single)
    state.apply({"type": "connection", "state": "connected", "detail": TITLE}, now=0.0)
    state.apply({"type": "stats", "active_streams": 1, "windows_per_second": 1.0, "latency_p50_ms": 1.0,
                 "latency_p99_ms": 2.0, "model_name": TITLE, "windows_scored": 1, "windows_dropped": 0,
                 "events_dropped": 0}, now=0.0)
    state.apply({"type": "stream_started", "stream_id": HOSTILE, "source": TITLE}, now=0.0)
    state.apply(score(HOSTILE, 3.0, 3.0), now=3.0)
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(render(state, 200))
    raw = console.export_text(styles=True)
    assert "\x1b[2J" not in raw and "\x1b[H" not in raw and "\x1b]0;" not in raw and "\x07" not in raw
    assert "MZ\\x1b[2J" in raw and "\\x1b]0;title\\x07" in raw
