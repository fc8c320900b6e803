"""The training recipe end to end with the tiny preset: label -> pretrain -> finetune ->
evaluate, plus the loss and the labelled-set readers (the ablation: test_ablate.py)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from jsqa.model import load_checkpoint
from jsqa.training import cli, teacher_features
from jsqa.training.datasets import ClipBank, Rated, read_rated
from jsqa.training.labels import CorpusSpec, build_corpus
from jsqa.training.losses import hint_loss, relation_loss, supcon_loss
from jsqa.training.loop import read_metrics


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("pretrain")
    assert cli.main(["pretrain", "--config", "tiny", "--out", str(out), "--steps", "3"]) == 0
    return out / "final.ckpt"


def test_supcon_prefers_embeddings_that_group_positives():
    positives = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    grouped = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.05], [0, 1], [0.05, 1]]), dim=1)
    mixed = grouped[[0, 2, 1, 3]]
    assert supcon_loss(grouped, positives) < supcon_loss(mixed, positives) - 1.0
    z = grouped.clone().requires_grad_(True)
    supcon_loss(z, positives).backward()
    assert z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no anchor has a positive"):
        supcon_loss(grouped, torch.zeros(4, 4, dtype=torch.bool))


def test_relation_loss_is_zero_for_the_teachers_relations_in_any_basis():
    teacher = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))[0]
    # Another width, basis, scale and offset, but every pair of clips as alike as in the teacher.
    student = torch.nn.functional.pad(teacher, (0, 11)) @ rotation * 3 + 2
    assert relation_loss(student, teacher) < 1e-10
    shuffled = student[torch.randperm(12, generator=torch.Generator().manual_seed(2))].requires_grad_(True)
    loss = relation_loss(shuffled, teacher)
    assert loss > 0.05
    loss.backward()
    assert shuffled.grad.abs().sum() > 0
    assert relation_loss(student[:1], teacher[:1]) == 0
    with pytest.raises(ValueError, match="embed 12 and 11 clips"):
        relation_loss(student, teacher[:11])


def test_read_rated_formats(tmp_path, speech_path, data_root):
    (tmp_path / "a.flac").symlink_to(speech_path)
    (tmp_path / "nisqa.csv").write_text("db,con,filepath_deg,mos\nX,3,a.flac,3.5\n")
    (tmp_path / "plain.csv").write_text(f"{speech_path},4.25\n")
    (tmp_path / "header.csv").write_text("path,mos,condition\na.flac,2.0,noisy\n")
    nisqa, plain, header = (read_rated(tmp_path / n) for n in ("nisqa.csv", "plain.csv", "header.csv"))
    assert nisqa[0].path == tmp_path / "a.flac" and nisqa[0].mos == 3.5 and nisqa[0].condition == "3"
    assert plain[0].path == speech_path and plain[0].mos == 4.25
    assert header[0].condition == "noisy" and header[0].mos == 2.0
    mushra = read_rated("codec_mushra")
    assert len(mushra) == 128
    first = next(r for r in mushra if r.path.name == "prop_13.flac" and r.path.parent.name == "stim_01")
    assert first.mos == pytest.approx(1 + 4 * 55.545 / 100)
    (tmp_path / "bad.csv").write_text("file,score\nx,y\n")
    with pytest.raises(ValueError, match="filepath_deg,mos"):
        read_rated(tmp_path / "bad.csv")


def test_speed_perturbation_shifts_pitch_and_keeps_length_and_label(tmp_path):
    sr = 16000
    t = np.arange(4 * sr) / sr
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr)
    items = [Rated(tmp_path / "tone.wav", 3.5)]

    def peaks(bank):
        rng = np.random.default_rng(0)
        out = []
        for _ in range(20):
            x, mos = bank.batch(1, rng)
            assert x.shape == (1, 3 * sr) and mos[0] == 3.5
            out.append(np.argmax(np.abs(np.fft.rfft(x[0]))) * sr / x.shape[1])
        return np.array(out)

    assert np.allclose(peaks(ClipBank(items, 3.0)), 1000)
    moved = peaks(ClipBank(items, 3.0, speed_perturb=0.1))
    assert moved.min() >= 899 and moved.max() <= 1101 and moved.max() - moved.min() > 80
    with pytest.raises(ValueError, match="speed_perturb"):
        ClipBank(items, 3.0, speed_perturb=0.6)


def test_label_corpus_is_scored_and_cached(corpus):
    rows = list(csv.DictReader(open(corpus)))
    assert len(rows) == 10
    mos = np.array([float(r["mos"]) for r in rows])
    assert ((mos >= 1) & (mos <= 5)).all() and mos.std() > 0.3
    for r in rows:
        assert (corpus.parent / r["path"]).is_file()
        recipe = json.loads(r["recipe"])
        if r["condition"] == "clean":
            assert recipe == [] and float(r["pesq_wb"]) > 4.5
    # Rebuilding with the same parameters reuses the cache; other parameters are refused.
    before = corpus.read_text()
    build_corpus(corpus.parent, CorpusSpec(n_clips=10, seconds=1.0, seed=4), teachers=["pesq_wb"], workers=0,
                 progress=False)
    assert corpus.read_text() == before
    with pytest.raises(ValueError, match="other parameters"):
        build_corpus(corpus.parent, CorpusSpec(n_clips=10, seconds=1.0, seed=5), teachers=["pesq_wb"],
                     workers=0, progress=False)


def test_pretrain_finetune_evaluate(pretrained, corpus, tmp_path, capsys):
    rows = read_metrics(pretrained.parent / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and "sim_pos" in r for r in rows)
    assert (pretrained.parent / "loss.png").stat().st_size > 1000

    out = tmp_path / "ft"
    assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(corpus),
                     "--out", str(out), "--steps", "3", "--validate-on", str(corpus),
                     "--validate-every", "3", "--speed-perturb", "0.1", "--chunk-loss", "0.5"]) == 0
    model, ckpt = load_checkpoint(out / "final.ckpt")
    assert ckpt["training"]["stage"] == "finetune"
    assert ckpt["training"]["config"]["speed_perturb"] == 0.1
    # Each chunk was also scored alone, and that loss is logged beside the window's.
    logged = read_metrics(out / "metrics.jsonl")
    assert all(np.isfinite(r["chunk_loss"]) and r["chunk_loss"] > 0 for r in logged)
    assert ckpt["training"]["init"]["checkpoint"] == str(pretrained)
    assert ckpt["training"]["labelled_clips"] == 10
    assert -1 <= ckpt["metrics"]["val_pearson"] <= 1
    # Fine-tuning started from the pretrained encoder, not from a fresh one.
    pre, _ = load_checkpoint(pretrained)
    w_pre = pre.encoder.stem[0].weight
    w_ft = model.encoder.stem[0].weight
    assert (w_ft - w_pre).abs().max() < 0.05 * w_pre.abs().max()

    capsys.readouterr()
    report = tmp_path / "report.json"
    assert cli.main(["evaluate", str(out / "final.ckpt"), "--data", str(corpus), "--json", str(report),
                     "--scatter", str(tmp_path / "s.png"), "--attach"]) == 0
    printed = capsys.readouterr().out
    assert "pearson" in printed and "rmse_mapped_3" in printed
    rep = json.loads(report.read_text())
    conditions = {r["condition"] for r in csv.DictReader(open(corpus))}
    assert rep["overall"]["n"] == 10 and set(rep["per_condition"]) == conditions
    assert (tmp_path / "s.png").stat().st_size > 1000
    # --attach stored the overall metrics in the checkpoint, for the ONNX metadata.
    _, ckpt = load_checkpoint(out / "final.ckpt")
    assert ckpt["metrics"][corpus.parent.name]["pearson"] == pytest.approx(rep["overall"]["pearson"], abs=1e-4)


def test_evaluate_onnx_matches_the_runtime(tiny_onnx_model, corpus, tmp_path, capsys):
    from jsqa.scorer import Scorer
    from jsqa.training.evaluate import evaluate_path

    items = read_rated(corpus)
    rep, pred = evaluate_path(tiny_onnx_model, items)
    # A clip with no speech has no MOS; evaluation scores it by the windows' mean, as the runtime computes it.
    direct = [r.mos if r.mos is not None else r.model_mean
              for r in (Scorer(tiny_onnx_model).score_file(it.path) for it in items)]
    assert np.allclose(pred, direct, atol=1e-5)
    assert rep["overall"]["n"] == 10


def test_finetune_reports_a_missing_checkpoint(corpus, tmp_path, capsys):
    assert cli.main(["finetune", "--config", "tiny", "--init", str(tmp_path / "nope.ckpt"),
                     "--data", str(corpus), "--out", str(tmp_path / "x")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["finetune", "--init", "scratch", "--data", "x.csv", "--out", "o", "--lr", "-1"],
    ["finetune", "--init", "scratch", "--data", "x.csv", "--out", "o", "--steps", "0"],
    ["finetune", "--init", "scratch", "--data", "x.csv", "--out", "o", "--batch-size", "two"],
    ["pretrain", "--out", "o", "--per-group", "1"],
    ["label", "--out", "o", "--workers", "-1"],
    ["label", "--out", "o", "--seconds", "nan"],
])
def test_numeric_options_are_checked_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: argument" in err[-1] and "Traceback" not in "\n".join(err)


def test_average_is_the_mean_of_the_weights_of_one_network(pretrained, corpus, tmp_path, capsys):
    from jsqa.model import PRESETS, JSQAModel, save_checkpoint

    runs = []
    for seed in (1, 2):
        out = tmp_path / f"ft{seed}"
        assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(corpus),
                         "--out", str(out), "--steps", "2", "--seed", str(seed)]) == 0
        runs.append(out / "final.ckpt")
    soup = tmp_path / "soup.ckpt"
    assert cli.main(["average", *map(str, runs), "--out", str(soup)]) == 0
    (a, _), (b, _), (mean, ckpt) = (load_checkpoint(p) for p in (*runs, soup))
    sa, sb = a.state_dict(), b.state_dict()
    moved = [k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k])]
    assert moved, "the two runs should differ"
    for k, v in mean.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, (sa[k] + sb[k]) / 2, atol=1e-6), k
    assert [r["checkpoint"] for r in ckpt["training"]["averaged"]] == [str(p) for p in runs]

    other = tmp_path / "other.ckpt"
    save_checkpoint(other, JSQAModel({**PRESETS["tiny"], "hidden_size": 32, "intermediate_size": 64}))
    capsys.readouterr()
    assert cli.main(["average", str(runs[0]), str(other), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "another network" in capsys.readouterr().err
    assert cli.main(["average", str(runs[0]), "--out", str(tmp_path / "x.ckpt")]) == 2


def test_finetune_turns_a_mean_pooled_init_into_attention_pooling(pretrained, corpus, tmp_path, capsys):
    """--pooling attention from a mean-pooled checkpoint: the attention weights start at zero
    (the mean) and train; averaged with a mean-pooled run, that run counts as zero weights."""
    mean_run, attention_run = tmp_path / "mean", tmp_path / "attention"
    for out, extra in ((mean_run, []), (attention_run, ["--pooling", "attention", "--chunk-loss", "0.5"])):
        assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(corpus),
                         "--out", str(out), "--steps", "3", "--seed", "1", *extra]) == 0
    model, ckpt = load_checkpoint(attention_run / "final.ckpt")
    assert model.pooling == ckpt["training"]["config"]["pooling"] == "attention"
    assert model.frame_score.weight.abs().max() > 0
    mean_model, _ = load_checkpoint(mean_run / "final.ckpt")
    assert mean_model.pooling == "mean"

    soup = tmp_path / "soup.ckpt"
    assert cli.main(["average", str(mean_run / "final.ckpt"), str(attention_run / "final.ckpt"),
                     "--out", str(soup)]) == 0
    averaged, _ = load_checkpoint(soup)
    assert averaged.pooling == "attention"
    torch.testing.assert_close(averaged.frame_score.weight, model.frame_score.weight / 2)
    torch.testing.assert_close(averaged.encoder.stem[0].weight,
                               (model.encoder.stem[0].weight + mean_model.encoder.stem[0].weight) / 2)

    capsys.readouterr()
    assert cli.main(["finetune", "--config", "tiny", "--init", str(attention_run / "final.ckpt"),
                     "--data", str(corpus), "--out", str(tmp_path / "x"), "--steps", "1",
                     "--pooling", "mean"]) == 2
    assert "cannot be turned into mean pooling" in capsys.readouterr().err


def test_finetune_on_the_talker_normalised_label(pretrained, corpus, tmp_path, capsys):
    rows = list(csv.DictReader(open(corpus)))
    # A second teacher's column that rates one talker's clean clips apart from the others'.
    dull = rows[0]["talker"]
    for r in rows:
        r["distillmos"] = f"{float(r['pesq_wb']) - (0.8 if r['talker'] == dull else 0.0):.4f}"
        r["path"] = str(corpus.parent / r["path"])
    two = tmp_path / "two-teachers.csv"
    with open(two, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(two),
                     "--out", str(out), "--steps", "2", "--label", "talker-normalised"]) == 0
    _, ckpt = load_checkpoint(out / "final.ckpt")
    assert ckpt["training"]["config"]["label"] == "talker-normalised"
    capsys.readouterr()
    # A CSV without the talker and both teachers' columns cannot be relabelled: one line says why.
    assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(corpus),
                     "--out", str(tmp_path / "x"), "--steps", "2", "--label", "talker-normalised"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a corpus CSV made by jsqa-train label" in err and "Traceback" not in err


class SpectrumEmbedder:
    """A stand-in for DistillMOS's embedding: the clip's log band energies."""

    def __init__(self):
        self.calls = 0

    def embedding(self, x):
        self.calls += 1
        return np.log10(np.array([b.mean() for b in np.array_split(np.abs(np.fft.rfft(x)), 8)]) + 1e-6).astype(
            np.float32)


def _copy_corpus(corpus, tmp_path):
    """The corpus's CSV in a folder of its own (where its embeddings will go), paths absolute."""
    rows = list(csv.DictReader(open(corpus)))
    for r in rows:
        r["path"] = str(corpus.parent / r["path"])
    data = tmp_path / "corpus" / "labels.csv"
    data.parent.mkdir()
    with open(data, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return data


def test_finetune_matches_the_teachers_relations_from_resumable_features(pretrained, corpus, tmp_path, capsys,
                                                                          monkeypatch):
    data = _copy_corpus(corpus, tmp_path)
    monkeypatch.setattr(teacher_features, "CHUNK", 4)
    folder = teacher_features.extract(data, workers=0, progress=False, teacher=SpectrumEmbedder())
    whole = teacher_features.load(data)
    assert sorted(p.name for p in folder.iterdir()) == ["000000.npz", "000004.npz", "000008.npz"]
    assert set(whole) == {corpus.parent / r["path"] for r in csv.DictReader(open(corpus))}
    (folder / "000004.npz").unlink()
    again = SpectrumEmbedder()
    teacher_features.extract(data, workers=0, progress=False, teacher=again)
    assert again.calls == 4  # only the missing chunk
    with pytest.raises(ValueError, match="workers=0"):
        teacher_features.extract(data, workers=2, progress=False, teacher=again)
    resumed = teacher_features.load(data)
    assert all(np.array_equal(resumed[k], v) for k, v in whole.items())

    out = tmp_path / "ft"
    assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(data),
                     "--out", str(out), "--steps", "2", "--teacher-relation", "1.0"]) == 0
    logged = read_metrics(out / "metrics.jsonl")
    assert all(np.isfinite(r["relation_loss"]) and r["relation_loss"] > 0 for r in logged)
    _, ckpt = load_checkpoint(out / "final.ckpt")
    assert ckpt["training"]["clips_with_teacher_features"] == 10
    assert ckpt["training"]["config"]["teacher_relation"] == 1.0
    capsys.readouterr()
    # Without the embeddings beside the CSV: one line saying what to run.
    assert cli.main(["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(corpus),
                     "--out", str(tmp_path / "x"), "--steps", "2", "--teacher-relation", "1.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"run jsqa-train features {corpus}" in err and "Traceback" not in err


def test_hint_loss_is_zero_only_for_the_teachers_embedding():
    teacher = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert hint_loss(teacher.clone(), teacher) == 0
    assert hint_loss(teacher + 0.5, teacher) == pytest.approx(0.25)
    assert hint_loss(teacher[:0], teacher[:0]) == 0
    with pytest.raises(ValueError, match="hint predicts"):
        hint_loss(teacher[:, :3], teacher)


def test_finetune_with_a_hint_resumes_its_head_exactly(pretrained, corpus, tmp_path, monkeypatch):
    """A run cut after step 2 and resumed ends where the uninterrupted run does: the hint head
    (the task's own state, outside the model) is checkpointed and restored with the rest."""
    data = _copy_corpus(corpus, tmp_path)
    teacher_features.extract(data, workers=0, progress=False, teacher=SpectrumEmbedder())
    args = ["finetune", "--config", "tiny", "--init", str(pretrained), "--data", str(data), "--steps", "4",
            "--checkpoint-every", "1", "--teacher-hint", "1.0", "--seed", "2"]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert cli.main([*args, "--out", str(straight)]) == 0

    from jsqa.training.tasks import ClipSource

    real_next, calls = ClipSource.next, []

    def stop_at_third(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the session ended during step 3
        return real_next(self)

    monkeypatch.setattr(ClipSource, "next", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*args, "--out", str(cut)])
    monkeypatch.setattr(ClipSource, "next", real_next)
    cut_state = torch.load(cut / "last.ckpt", weights_only=False)
    assert cut_state["step"] == 2 and set(cut_state["task_state"]) >= {"hint.weight", "hint.bias"}
    assert cli.main([*args, "--out", str(cut), "--resume"]) == 0

    a = torch.load(straight / "last.ckpt", weights_only=False)
    b = torch.load(cut / "last.ckpt", weights_only=False)
    assert a["task_state"]["hint.weight"].shape == (8, a["config"]["hidden_size"])
    assert all(torch.equal(a["task_state"][k], b["task_state"][k]) for k in a["task_state"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    losses = [r["hint_loss"] for r in read_metrics(cut / "metrics.jsonl")]
    assert len(losses) == 4 and all(np.isfinite(x) and x > 0 for x in losses)
    assert losses == [r["hint_loss"] for r in read_metrics(straight / "metrics.jsonl")]
