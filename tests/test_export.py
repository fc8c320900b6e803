"""Export -> score round trip on the tiny checkpoint, with parity enforced."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from jsqa.export.cli import main as export_main
from jsqa.export.onnx_export import export_onnx, read_metadata
from jsqa.export.parity import FP32_TOLERANCE, ParityError, check_parity

from jsqa.model import JSQAModel, load_checkpoint
from jsqa.scorer import Scorer

CONTRACT_KEYS = {
    "name", "version", "preset", "sample_rate", "window_seconds", "hop_seconds",
    "score_min", "score_max", "training", "metrics",
}


def test_exported_file_follows_the_contract(tiny_onnx_model):
    proto = onnx.load(str(tiny_onnx_model))
    onnx.checker.check_model(proto, full_check=True)
    (audio,) = proto.graph.input
    assert audio.name == "audio"
    assert audio.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = audio.type.tensor_type.shape.dim
    assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims)  # batch and time dynamic
    assert [o.name for o in proto.graph.output] == ["mos"]
    metadata = read_metadata(tiny_onnx_model)
    assert CONTRACT_KEYS <= set(metadata)
    assert metadata["preset"] == "tiny" and metadata["sample_rate"] == "16000"
    assert json.loads(metadata["training"]) == {"stage": "random init (tests)"}
    # One self-contained file: no external weight data beside it.
    assert not list(tiny_onnx_model.parent.glob("*.data"))


def test_scorer_matches_torch_on_real_speech(tiny_onnx_model, tiny_checkpoint, clean_speech):
    model, _ = load_checkpoint(tiny_checkpoint)
    scorer = Scorer(tiny_onnx_model, providers=["CPUExecutionProvider"])
    all_scores = []
    for n in (5 * 16000 + 777, 16000 * 3, 20000):
        audio = clean_speech[:n]
        result = scorer.score(audio)
        windows = [audio[round(w.t_start * 16000) : round(w.t_end * 16000)] for w in result.windows]
        with torch.no_grad():
            expected = model(torch.from_numpy(np.stack(windows))).numpy()
        got = np.array([w.mos for w in result.windows])
        assert np.abs(got - expected).max() <= FP32_TOLERANCE
        all_scores.extend(got)
    assert np.ptp(all_scores) > 1e-3  # the scores vary, so agreeing on them means something


def test_parity_check_catches_a_wrong_graph(tiny_onnx_model):
    torch.manual_seed(123)
    other = JSQAModel("tiny")
    with torch.no_grad():
        other.mos_head[-1].weight.mul_(40.0)
    with pytest.raises(ParityError, match="differ by"):
        check_parity(other, tiny_onnx_model)


def test_legacy_exporter_fallback(tiny_checkpoint, tmp_path, clean_speech):
    report = export_onnx(tiny_checkpoint, tmp_path / "legacy.onnx", exporter="legacy")
    assert report.exporter == "legacy"
    assert report.parity.max_abs_diff <= FP32_TOLERANCE
    assert len(report.parity.cases) >= 4
    scorer = Scorer(report.output)
    assert scorer.metadata["preset"] == "tiny"
    assert 1.0 <= scorer.score(clean_speech).mos <= 5.0


@pytest.mark.slow
def test_cli_int8_export_reports_parity_and_pearson_change(tiny_checkpoint, tmp_path, data_root, capsys):
    output = tmp_path / "int8.onnx"
    labels = data_root / "rated" / "warpq" / "ratings.csv"
    assert export_main(["onnx", str(tiny_checkpoint), "-o", str(output), "--quantize", "int8", "--labels", str(labels)]) == 0
    printed = capsys.readouterr().out
    assert "parity on" in printed and "max |diff|" in printed
    assert "Pearson on warpq (8 files): fp32" in printed
    proto = onnx.load(str(output))
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "ConvInteger" not in ops  # convolutions stay float
    metadata = read_metadata(output)
    assert CONTRACT_KEYS <= set(metadata) and "int8" in metadata["quantization"]
    assert 1.0 <= Scorer(output).score_windows(np.zeros((1, 48000), dtype=np.float32) + 0.01)[0] <= 5.0


def test_cli_refuses_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main(["onnx", str(tmp_path / "missing.pt")])
    assert exit_info.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a checkpoint\n")
    assert export_main(["onnx", str(not_a_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"jsqa-export: cannot export {not_a_checkpoint}:") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        export_main(["onnx", str(not_a_checkpoint), "--opset", "-3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("argument --opset: -3 is out of range: use at least 1")


def test_rated_sets_load_with_mushra_mapped_to_mos(data_root, tmp_path):
    from jsqa.rated import load_rated_set, mushra_to_mos

    np.testing.assert_allclose(mushra_to_mos([0, 50, 100]), [1.0, 3.0, 5.0])
    rated = load_rated_set(data_root / "rated" / "codec_mushra" / "ratings.csv")
    assert len(rated.files) == 128 and all(f.is_file() for f in rated.files)
    assert 1.0 <= rated.mos.min() and rated.mos.max() <= 5.0
    assert "Reference" in rated.conditions and len(set(rated.conditions)) > 5
    bad = tmp_path / "bad.csv"
    bad.write_text("file,score\na.wav,3\n")
    with pytest.raises(ValueError, match="'mos', 'mos_ovrl' or 'mushra_mean'"):
        load_rated_set(bad)
