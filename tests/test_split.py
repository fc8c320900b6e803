"""The split model (per-hop encoder + window head): export, runtime, and the engine
scoring each hop once with the same window scores as the whole model.

Tolerance: 1e-4 MOS (the fp32 export parity limit); the parts and the whole graph run
the same operations, differing only in batch layout and the order of the mean.
"""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from jsqa.export.graph import set_metadata
from jsqa.export.onnx_export import read_metadata
from jsqa.streaming.engine import Engine

from jsqa.audio import load_audio
from jsqa.scorer import Scorer
from jsqa.split_scorer import split_paths

TOLERANCE = 1e-4
SR = 16000


@pytest.fixture(scope="module", params=["mean", "attention"])
def spread_model(request, tiny_checkpoint, clean_speech, tmp_path_factory):
    """The tiny checkpoint with its MOS head's bias centred on real speech, exported with
    its parts, with each pooling (attention with random weights, so it is not the mean).
    The shared fixture's scores sit within 0.01 of 1.0 on 3 s speech windows; here they
    spread over the range, so agreeing on them means something."""
    torch = pytest.importorskip("torch")
    from jsqa.export.onnx_export import export_onnx

    from jsqa.model import load_checkpoint, save_checkpoint

    model, ckpt = load_checkpoint(tiny_checkpoint, pooling=request.param)
    if request.param == "attention":
        torch.manual_seed(3)
        with torch.no_grad():
            model.frame_score.weight.normal_(std=1.0)
    windows = torch.from_numpy(np.stack([clean_speech[s * SR : (s + 3) * SR] for s in range(0, 12, 2)]))
    with torch.no_grad():
        logits = model.mos_head(model.embed(windows)).squeeze(-1)
        model.mos_head[-1].bias -= logits.median()
    checkpoint = tmp_path_factory.mktemp(f"spread-{request.param}") / "spread.pt"
    save_checkpoint(checkpoint, model, training=ckpt["training"])
    return export_onnx(checkpoint, checkpoint.with_suffix(".onnx")).output


@pytest.fixture(scope="module")
def recordings(clean_speech, speech_dir):
    """Two real recordings whose lengths are not whole seconds (so each has a tail window)."""
    return {
        "librispeech": clean_speech,  # 14.84 s
        "codec2": load_audio(speech_dir / "codec2" / "speech_orig_16k.flac")[: 10 * SR + 4321],
    }


def test_export_writes_both_parts_beside_the_model_with_its_metadata(tiny_onnx_model):
    encoder_path, head_path = split_paths(tiny_onnx_model)
    assert encoder_path.name == "tiny.encoder.onnx" and head_path.name == "tiny.head.onnx"
    whole = read_metadata(tiny_onnx_model)
    for path, part, (input_name, dims), output_name in (
        (encoder_path, "encoder", ("audio", [None, SR]), "embedding"),
        (head_path, "head", ("embeddings", [None, None, 64]), "mos"),
    ):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        (graph_input,) = proto.graph.input
        assert graph_input.name == input_name
        shape = [d.dim_value or None for d in graph_input.type.tensor_type.shape.dim]
        assert shape == dims  # None: a dynamic axis
        assert [o.name for o in proto.graph.output] == [output_name]
        assert read_metadata(path) == {**whole, "part": part, "chunk_seconds": "1.0"}


def test_parts_score_windows_like_the_whole_model(spread_model, recordings):
    scorer = Scorer(spread_model)
    split = scorer.split
    assert split is not None and split.chunk_samples == SR
    assert split.streams(3 * SR, SR) and not split.streams(3 * SR, SR // 2) and not split.streams(int(2.5 * SR), SR)
    all_scores = []
    for audio in recordings.values():
        n_chunks = len(audio) // SR
        embeddings = split.encode_chunks(audio[: n_chunks * SR].reshape(n_chunks, SR))  # each second once
        starts = range(n_chunks - 2)
        got = split.score_embeddings(np.stack([embeddings[s : s + 3] for s in starts]))
        expected = scorer.score_windows(np.stack([audio[s * SR : (s + 3) * SR] for s in starts]))
        assert np.abs(got - expected).max() <= TOLERANCE
        all_scores.extend(expected)
    assert np.ptp(all_scores) > 0.5  # the scores vary, so agreeing on them means something


def test_parts_of_another_export_are_not_used(tiny_onnx_model, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx_model, model)
    for source, target in zip(split_paths(tiny_onnx_model), split_paths(model)):
        shutil.copy(source, target)
    assert Scorer(model).split is not None
    assert Scorer(model, split=False).split is None
    encoder = split_paths(model)[0]
    proto = onnx.load(str(encoder))
    set_metadata(proto, {"version": "0.0.1-other"})
    onnx.save(proto, str(encoder))
    assert Scorer(model).split is None  # the whole model still scores; the stale part is ignored


async def _window_scores(scorer: Scorer, recordings: dict, **options) -> tuple[dict, Engine]:
    """Each recording as a stream of 100 ms frames, interleaved; its score events by stream."""
    async with Engine(scorer, **options) as engine:
        sub = engine.subscribe(types={"score"})
        for stream_id in recordings:
            engine.open_stream(stream_id, "test", lossless=True)
        longest = max(len(x) for x in recordings.values())
        for i in range(0, longest, SR // 10):
            for stream_id, audio in recordings.items():
                if i < len(audio):
                    await engine.push(stream_id, audio[i : i + SR // 10])
            await asyncio.sleep(0)
        for stream_id in recordings:
            engine.end_stream(stream_id)
        await engine.drain()
        sub.close()
        events = [e async for e in sub]
    return {s: [e for e in events if e["stream_id"] == s] for s in recordings}, engine


def test_engine_encodes_each_hop_once_and_scores_like_whole_windows(spread_model, recordings):
    split_scorer = Scorer(spread_model)
    split_events, split_engine = asyncio.run(_window_scores(split_scorer, recordings))
    whole_events, whole_engine = asyncio.run(_window_scores(Scorer(spread_model, split=False), recordings))
    assert split_engine.split is not None and whole_engine.split is None
    for stream_id, audio in recordings.items():
        split, whole = split_events[stream_id], whole_events[stream_id]
        assert [(e["t_start"], e["t_end"]) for e in split] == [(e["t_start"], e["t_end"]) for e in whole]
        assert len(split) == len(audio) // SR - 2 + 1  # every full window and the tail
        assert [e["speech_ratio"] for e in split] == [e["speech_ratio"] for e in whole]
        split_mos = np.array([np.nan if e["mos"] is None else e["mos"] for e in split])
        whole_mos = np.array([np.nan if e["mos"] is None else e["mos"] for e in whole])
        assert np.array_equal(np.isnan(split_mos), np.isnan(whole_mos))
        assert np.nanmax(np.abs(split_mos - whole_mos)) <= TOLERANCE
        assert np.nanmax(split_mos) - np.nanmin(split_mos) > 0.2
    # each whole second went through the encoder once (the tail window, off the hop grid,
    # is scored whole); scoring every 3 s window whole would have encoded 3x as many
    assert split_scorer.split.chunks_encoded == sum(len(x) // SR for x in recordings.values())


def test_engine_scores_whole_windows_when_its_hop_is_not_the_chunk(tiny_onnx_model):
    assert Engine(Scorer(tiny_onnx_model), hop_seconds=0.5).split is None


def test_engine_encodes_a_streams_first_hops_as_they_arrive(spread_model, clean_speech):
    """A call's first window then costs one hop, like every later one: calls that start
    together do not all need three hops encoded in the same second."""
    scorer = Scorer(spread_model)

    async def run() -> tuple[list[int], list[dict]]:
        encoded = []
        async with Engine(scorer) as engine:
            sub = engine.subscribe("call", types={"score"})
            engine.open_stream("call", "test")
            for second in range(3):
                for i in range(second * SR, (second + 1) * SR, SR // 10):
                    await engine.push("call", clean_speech[i : i + SR // 10])
                for _ in range(500):
                    if scorer.split.chunks_encoded > second:
                        break
                    await asyncio.sleep(0.01)
                encoded.append(scorer.split.chunks_encoded)
            engine.end_stream("call")
            await engine.drain()
            sub.close()
            return encoded, [e async for e in sub]

    encoded, events = asyncio.run(run())
    assert encoded == [1, 2, 3]
    assert [(e["t_start"], e["t_end"]) for e in events] == [(0.0, 3.0)]
    whole = Scorer(spread_model, split=False).score_windows(clean_speech[None, : 3 * SR])
    assert abs(events[0]["mos"] - float(whole[0])) <= TOLERANCE
