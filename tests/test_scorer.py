"""Scorer: ONNX Runtime scoring of real speech with the tiny exported model."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from jsqa import scorer as scorer_module
from jsqa.scorer import ModelError, Scorer


@pytest.fixture(scope="module")
def scorer(tiny_onnx_model):
    return Scorer(tiny_onnx_model, providers=["CPUExecutionProvider"], intra_threads=1)


def test_reads_everything_from_the_model_metadata(scorer):
    assert scorer.sample_rate == 16000
    assert (scorer.window_seconds, scorer.hop_seconds) == (3.0, 1.0)
    assert (scorer.score_min, scorer.score_max) == (1.0, 5.0)
    assert scorer.name == "jsqa-tiny"
    assert scorer.metadata["preset"] == "tiny"
    assert scorer.training == {"stage": "random init (tests)"}
    assert scorer.providers == ["CPUExecutionProvider"]


def test_windows_cover_the_signal(scorer, clean_speech):
    result = scorer.score(clean_speech[: 16000 * 14])  # windows start every second, the last at 11 s
    assert [w.t_start for w in result.windows] == [float(s) for s in range(12)]
    assert all(w.t_end - w.t_start == 3.0 for w in result.windows)
    assert result.mos == pytest.approx(np.mean([w.mos for w in result.windows]), abs=1e-6)
    assert all(1.0 <= w.mos <= 5.0 for w in result.windows)
    # Real speech varies from window to window, and so do the scores.
    assert np.ptp([w.mos for w in result.windows]) > 1e-3


def test_window_scores_equal_scoring_each_window_alone(scorer, clean_speech):
    result = scorer.score(clean_speech[: 16000 * 5])
    for w in result.windows:
        alone = scorer.score_windows(clean_speech[None, int(w.t_start * 16000) : int(w.t_end * 16000)])
        assert w.mos == pytest.approx(float(alone[0]), abs=1e-5)


def test_tail_gets_a_window_aligned_to_the_end(scorer, clean_speech):
    result = scorer.score(clean_speech[: int(16000 * 4.5)])
    assert [(w.t_start, w.t_end) for w in result.windows] == [(0.0, 3.0), (1.0, 4.0), (1.5, 4.5)]


def test_audio_shorter_than_a_window_is_scored_whole(scorer, clean_speech):
    clip = clean_speech[16000 : 16000 + 12345]
    result = scorer.score(clip)
    assert [(w.t_start, w.t_end) for w in result.windows] == [(0.0, 12345 / 16000)]
    assert result.mos == pytest.approx(float(scorer.score_windows(clip[None])[0]), abs=1e-6)
    tiny_clip = scorer.score(clean_speech[16000:16100])
    assert len(tiny_clip.windows) == 1 and 1.0 <= tiny_clip.windows[0].mos <= 5.0


def test_score_many_batches_and_matches_single_scoring(tiny_onnx_model, clean_speech):
    scorer = Scorer(tiny_onnx_model, providers=["CPUExecutionProvider"], max_batch=64)
    signals = [clean_speech[: 16000 * n] for n in (3, 5, 8)] + [clean_speech[:8000], clean_speech[:8000] * 0.5]
    singles = [scorer.score(x) for x in signals]
    calls_before = scorer.run_calls
    batched = scorer.score_many(signals)
    # 1 + 3 + 6 full windows in one call, the two half-second clips (same length) in another.
    assert scorer.run_calls - calls_before == 2
    for one, many in zip(singles, batched):
        assert [w.t_start for w in one.windows] == [w.t_start for w in many.windows]
        assert many.mos == pytest.approx(one.mos, abs=1e-5)


def test_score_windows_is_thread_safe(scorer, clean_speech):
    batches = [np.stack([clean_speech[i * 4000 + k * 16000 :][:48000] for k in range(3)]) for i in range(8)]
    expected = [scorer.score_windows(b) for b in batches]
    got = [None] * len(batches)

    def work(i):
        for _ in range(3):
            got[i] = scorer.score_windows(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-6)


def test_rejects_bad_audio(scorer):
    with pytest.raises(ValueError, match="mono"):
        scorer.score(np.zeros((16000, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        scorer.score(np.zeros(0, dtype=np.float32))


def test_missing_model_file(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as err:
        Scorer(missing)
    message = str(err.value)
    assert str(missing) in message and "not found" in message and "\n" not in message


def test_missing_default_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(scorer_module, "DEFAULT_MODEL", tmp_path / "jsqa-small.onnx")
    with pytest.raises(ModelError, match="jsqa-export onnx CHECKPOINT -o .*jsqa-small.onnx"):
        Scorer()


def test_corrupt_model_file(tmp_path, tiny_onnx_model):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx_model.read_bytes()[:5000])
    with pytest.raises(ModelError) as err:
        Scorer(corrupt)
    message = str(err.value)
    assert str(corrupt) in message and "not a readable ONNX model" in message and "\n" not in message


def test_onnx_file_without_jsqa_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["audio"], ["mos"], axes=[1], keepdims=0)],
        "plain",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("mos", TensorProto.FLOAT, ["batch"])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    with pytest.raises(ModelError, match="metadata lacks sample_rate.*jsqa-export"):
        Scorer(path)


def test_scorer_does_not_import_torch():
    code = "import sys, jsqa.scorer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
