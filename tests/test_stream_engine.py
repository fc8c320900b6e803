"""The streaming engine with a real exported model: windows, events, VAD, rolling MOS,
alerts, bounded subscribers, and the edge decoders."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from jsqa.streaming.alerts import AlertTracker
from jsqa.streaming.decode import DecodeError, Decoder
from jsqa.streaming.engine import Engine
from jsqa.streaming.events import ScoreEvent
from jsqa.streaming.window import Windower

from jsqa.audio import resample
from jsqa.g711 import alaw_encode, mulaw_encode
from jsqa.scorer import Scorer


@pytest.fixture(scope="module")
def scorer(tiny_onnx_model):
    return Scorer(tiny_onnx_model)


async def _run(scorer, chunks_by_stream: dict[str, list[np.ndarray]], **options) -> tuple[list[dict], Engine]:
    """Feed every stream's chunks (interleaved), end them, return all events."""
    async with Engine(scorer, **options) as engine:
        sub = engine.subscribe()
        for stream_id in chunks_by_stream:
            engine.open_stream(stream_id, "test")
        longest = max(len(c) for c in chunks_by_stream.values())
        for i in range(longest):
            for stream_id, chunks in chunks_by_stream.items():
                if i < len(chunks):
                    await engine.push(stream_id, chunks[i])
            await asyncio.sleep(0)
        for stream_id in chunks_by_stream:
            engine.end_stream(stream_id)
        await engine.drain()
        sub.close()
        return [e async for e in sub if e["type"] != "stats"], engine


def _chunks(x: np.ndarray, size: int = 1600) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _window(w: Windower, start: int, length: int) -> np.ndarray:
    out = np.empty(length, np.float32)
    w.read(start, length, out)
    return out


def test_windower_cuts_windows_at_every_hop_whatever_the_chunking():
    x = np.arange(10_500, dtype=np.float32)
    expected = list(range(0, 10_500 - 3000 + 1, 1000))
    for chunk in (1, 7, 999, 1000, 4321):
        w = Windower(3000, 1000)
        got = []
        for i in range(0, len(x), chunk):
            for start in w.push(x[i : i + chunk]):
                got.append(start)
                np.testing.assert_array_equal(_window(w, start, 3000), x[start : start + 3000])
                w.release(start)
        assert got == expected
        start, length = w.flush()  # 10500 is not on a hop: a window ending there covers the tail
        assert (start, length) == (7500, 3000)
        np.testing.assert_array_equal(_window(w, start, length), x[7500:])
    on_hop = Windower(3000, 1000)
    on_hop.push(x[:10_000])
    assert on_hop.flush() is None


def test_windower_scores_a_short_stream_whole_and_ignores_a_tiny_one():
    w = Windower(3000, 1000)
    assert w.push(np.ones(1500, np.float32)) == []
    assert w.flush() == (0, 1500)
    tiny = Windower(3000, 1000)
    tiny.push(np.ones(10, np.float32))
    assert tiny.flush() is None


def test_windower_holds_unreleased_windows_and_shrinks_once_they_are_done():
    x = np.arange(60_000, dtype=np.float32)
    w = Windower(3000, 1000)
    idle_bytes = w.nbytes
    starts = [s for i in range(0, len(x), 500) for s in w.push(x[i : i + 500])]
    # nothing released: every window's audio is still there, once, however far behind
    assert w.backlog == len(x) - 3000
    for start in starts:
        np.testing.assert_array_equal(_window(w, start, 3000), x[start : start + 3000])
    for start in starts:
        w.release(start)
    assert w.backlog == 0 and w.nbytes == idle_bytes
    with pytest.raises(ValueError, match="not held"):
        _window(w, starts[0], 3000)


def test_decoder_pcm_mulaw_alaw_and_rates(clean_speech):
    x = clean_speech[:16000]
    pcm = Decoder("pcm_s16le", 16000).decode((x * 32767).astype("<i2").tobytes())
    np.testing.assert_allclose(pcm, x, atol=1e-4)
    f32 = Decoder("f32le", 16000).decode(x.astype("<f4").tobytes())
    np.testing.assert_array_equal(f32, x)

    narrow = resample(x, 16000, 8000)
    for encoding, encode in (("mulaw", mulaw_encode), ("alaw", alaw_encode)):
        decoder = Decoder(encoding, 8000)
        codes = encode(narrow).tobytes()
        out = np.concatenate([decoder.decode(codes[i : i + 160]) for i in range(0, len(codes), 160)] + [decoder.flush()])
        assert len(out) == len(x)
        # G.711 plus 8 kHz band limiting keeps the speech: strongly correlated with the original
        assert np.corrcoef(out, x)[0, 1] > 0.9

    stereo48 = np.stack([resample(x, 16000, 48000)] * 2, axis=1)
    decoder = Decoder("f32le", 48000, channels=2)
    out = np.concatenate([decoder.decode(stereo48[i : i + 4800].astype("<f4").tobytes()) for i in range(0, 48000, 4800)] + [decoder.flush()])
    assert len(out) == 16000
    assert np.corrcoef(out, x)[0, 1] > 0.99


@pytest.mark.parametrize(
    "encoding, rate, channels, message",
    [("opus", 16000, 1, "unknown encoding"), ("pcm_s16le", 12345, 1, "unsupported rate"),
     ("pcm_s16le", 16000, 0, "channel count")],
)
def test_decoder_rejects_unknown_formats(encoding, rate, channels, message):
    with pytest.raises(DecodeError, match=message):
        Decoder(encoding, rate, channels)


def test_decoder_rejects_torn_samples():
    with pytest.raises(DecodeError, match="not a whole number of pcm_s16le samples"):
        Decoder("pcm_s16le", 16000).decode(b"\x00\x01\x02")
    with pytest.raises(DecodeError, match="2 channel"):
        Decoder("pcm_s16le", 16000, channels=2).decode(b"\x00\x01")
    with pytest.raises(DecodeError, match="NaN"):
        Decoder("f32le", 16000).decode(np.array([np.nan], "<f4").tobytes())


def test_engine_scores_every_window_like_the_scorer(scorer, clean_speech):
    x = clean_speech[: 16000 * 10]
    events, engine = asyncio.run(_run(scorer, {"call": _chunks(x, 1234)}))
    scores = [e for e in events if e["type"] == "score"]
    assert events[0]["type"] == "stream_started"
    assert [e["t_end"] for e in scores] == [float(t) for t in range(3, 11)]
    expected = scorer.score_windows(np.stack([x[s * 16000 : s * 16000 + 48000] for s in range(8)]))
    np.testing.assert_allclose([e["mos"] for e in scores], expected, rtol=1e-5)
    # immutable events: rebuilding one from its dict gives the same dict
    assert ScoreEvent(**{k: v for k, v in scores[0].items() if k != "type"}).to_dict() == scores[0]
    ended = events[-1]
    assert ended["type"] == "stream_ended" and ended["windows"] == 8 and ended["duration_s"] == 10.0
    assert ended["mean_mos"] == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert ended["worst_mos"] == pytest.approx(float(np.min(expected)), rel=1e-5)
    assert engine.windows_scored == 8 and engine.windows_dropped == 0


def test_rolling_mos_is_exponential_smoothing_and_mean_of_last_n(scorer, clean_speech):
    events, _ = asyncio.run(_run(scorer, {"a": _chunks(clean_speech)}, smoothing=0.5, mean_windows=3))
    scores = [e for e in events if e["type"] == "score"]
    smoothed = scores[0]["mos"]
    for i, e in enumerate(scores):
        if i:
            smoothed = 0.5 * e["mos"] + 0.5 * smoothed
        assert e["mos_smoothed"] == pytest.approx(smoothed)
        last = [s["mos"] for s in scores[max(0, i - 2) : i + 1]]
        assert e["mos_mean"] == pytest.approx(np.mean(last))


def test_window_levels_match_the_whole_window_measures(scorer, clean_speech):
    """The engine measures each hop once and combines hops into windows; every window's VAD,
    level and clipping figures are those of the window measured whole (the tail too)."""
    from jsqa.levels import clipping_ratio, level_dbfs, speech_ratio

    x = clean_speech[: 16000 * 7 + 4321].copy()
    x[16000 * 5 : 16000 * 5 + 800] = 1.0  # some clipping to count
    events, _ = asyncio.run(_run(scorer, {"a": _chunks(x)}))
    scores = [e for e in events if e["type"] == "score"]
    assert len(scores) == 6  # five windows on the hop grid and the tail
    for e in scores:
        w = x[round(e["t_start"] * 16000) : round(e["t_end"] * 16000)]
        assert e["speech_ratio"] == pytest.approx(speech_ratio(w), abs=1e-12)
        assert e["level_dbfs"] == pytest.approx(level_dbfs(w), abs=1e-9)
        assert e["clipping_ratio"] == pytest.approx(clipping_ratio(w), abs=1e-12)
    assert any(e["clipping_ratio"] > 0 for e in scores) and any(e["speech_ratio"] > 0.5 for e in scores)


def test_windows_without_speech_are_marked_not_scored(scorer, clean_speech, noise_dir):
    from jsqa.audio import load_audio

    speech = clean_speech[: 16000 * 4]
    hum = load_audio(noise_dir / "pst_background_samples" / "fridge.flac")[: 16000 * 4] * 0.05
    silence = np.zeros(16000 * 4, np.float32)
    events, engine = asyncio.run(_run(scorer, {"a": _chunks(np.concatenate([speech, silence, hum]))}))
    scores = [e for e in events if e["type"] == "score"]
    quiet = [e for e in scores if e["t_start"] >= 4.0]  # windows wholly after the speech
    assert quiet and all(e["no_speech"] and e["mos"] is None for e in quiet)
    assert all(e["speech_ratio"] < 0.2 for e in quiet)
    assert not scores[0]["no_speech"] and scores[0]["mos"] is not None
    silent = [e for e in quiet if e["t_end"] <= 8.0]
    assert silent and all(e["level_dbfs"] == -120.0 for e in silent)
    # the rolling MOS and the summary ignore no-speech windows instead of counting them as bad
    last_speech = [e for e in scores if not e["no_speech"]][-1]
    assert all(e["mos_smoothed"] == last_speech["mos_smoothed"] for e in quiet)
    assert events[-1]["mean_mos"] == pytest.approx(np.mean([e["mos"] for e in scores if e["mos"] is not None]))
    assert engine.windows_no_speech == len(quiet)


def test_many_streams_are_batched_into_few_model_calls(scorer, clean_speech):
    x = clean_speech[: 16000 * 6]
    streams = {f"s{i}": _chunks(x, 4000) for i in range(20)}
    calls_before = scorer.run_calls
    # pushed faster than real time, these windows are catch-up work: allow it full batches
    events, _ = asyncio.run(_run(scorer, streams, catchup_batch=32))
    per_stream = {sid: [e for e in events if e["type"] == "score" and e["stream_id"] == sid] for sid in streams}
    assert all(len(v) == 4 for v in per_stream.values())
    # all 20 streams give identical audio, so identical scores
    assert len({tuple(round(e["mos"], 5) for e in v) for v in per_stream.values()}) == 1
    assert scorer.run_calls - calls_before < 80 / 4


def test_slow_subscriber_drops_oldest_and_never_slows_scoring(scorer, clean_speech):
    async def scenario():
        async with Engine(scorer, queue_size=1024) as engine:
            stuck = engine.subscribe(maxsize=3)  # never read while the stream runs
            reader = engine.subscribe()
            engine.open_stream("a")
            for chunk in _chunks(clean_speech):
                await engine.push("a", chunk)
            engine.end_stream("a")
            await engine.drain()
            reader.close()
            stuck.close()
            read = [e async for e in reader if e["type"] != "stats"]
            kept = [e async for e in stuck if e["type"] != "stats"]
            return engine, read, kept, stuck.dropped

    engine, read, kept, dropped = asyncio.run(scenario())
    # 14.84 s: windows ending at 3..14 s and one ending at 14.84 s
    assert engine.windows_scored == 13 and len([e for e in read if e["type"] == "score"]) == 13
    assert len(kept) <= 3 and kept[-1]["type"] == "stream_ended"  # the newest events survive
    assert dropped >= 12 and engine.events_dropped == dropped


def test_backlog_drops_oldest_windows_of_live_streams_only(scorer, clean_speech):
    async def scenario(lossless):
        async with Engine(scorer, max_pending=2) as engine:
            engine.open_stream("a", lossless=lossless)
            await engine.push("a", clean_speech)  # 12 windows complete at once, the tail at the end
            engine.end_stream("a")
            await engine.drain()
            return engine.windows_dropped, engine.windows_scored

    dropped, scored = asyncio.run(scenario(False))
    assert dropped > 0 and dropped + scored == 13  # 12 windows and the tail
    assert asyncio.run(scenario(True)) == (0, 13)


def test_alert_tracker_degrades_after_t_seconds_and_recovers_with_hysteresis():
    tracker = AlertTracker(threshold=3.0, seconds=3.0, hysteresis=0.2)
    seen = []
    for t, mos in enumerate([3.5, 2.9, 2.8, 2.7, 2.6, 2.9, 3.1, 3.3, 3.4]):
        alert = tracker.update("a", float(t), mos)
        if alert:
            seen.append((alert.state, alert.t))
    # below from t=1; 3 s later (t=4) degraded; 3.1 is inside the hysteresis band; 3.3 recovers
    assert seen == [("degraded", 4.0), ("recovered", 7.0)]
    brief = AlertTracker(threshold=3.0, seconds=3.0)
    assert [brief.update("a", float(t), m) for t, m in enumerate([2.0, 2.0, 3.5, 2.0, 2.0])] == [None] * 5


def test_engine_publishes_alerts(scorer, clean_speech):
    # the tiny random model scores below 5 everywhere, so a threshold of 5 must alert
    events, _ = asyncio.run(_run(scorer, {"a": _chunks(clean_speech)}, alert_threshold=5.0, alert_seconds=2.0))
    alerts = [e for e in events if e["type"] == "alert"]
    assert len(alerts) == 1
    assert alerts[0]["state"] == "degraded" and alerts[0]["t"] == 5.0 and alerts[0]["threshold"] == 5.0


def test_stats_event_reports_the_engine(scorer, clean_speech):
    async def scenario():
        async with Engine(scorer, stats_interval=0.05) as engine:
            sub = engine.subscribe(types={"stats"})
            engine.open_stream("a")
            await engine.push("a", clean_speech[:48000])
            async for event in sub:
                if event["windows_scored"] == 1:
                    return event

    stats = asyncio.run(scenario())
    assert stats["active_streams"] == 1 and stats["model_name"] == "jsqa-tiny"
    assert stats["latency_p50_ms"] >= 0 and stats["windows_dropped"] == 0


def test_a_new_subscriber_gets_the_stats_at_once(scorer):
    async def scenario():
        async with Engine(scorer, stats_interval=3600) as engine:
            everything = engine.subscribe()
            one_stream = engine.subscribe("a")
            first = await asyncio.wait_for(everything.__anext__(), 5)
            one_stream.close()
            return first, [e async for e in one_stream]

    first, one_stream = asyncio.run(scenario())
    assert first["type"] == "stats" and first["model_name"] == "jsqa-tiny" and first["active_streams"] == 0
    assert one_stream == []  # stats are engine-wide: a one-stream subscriber does not get them


def test_a_longer_hop_scores_fewer_windows(scorer, clean_speech):
    events, _ = asyncio.run(_run(scorer, {"a": _chunks(clean_speech[: 16000 * 10])}, hop_seconds=3.0))
    # windows end every 3 s, and one more ends with the stream
    assert [e["t_end"] for e in events if e["type"] == "score"] == [3.0, 6.0, 9.0, 10.0]
