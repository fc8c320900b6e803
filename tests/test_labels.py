"""The teacher-labelled corpus: resumable labelling, the label mean, re-rendering from the recipe."""

from __future__ import annotations

import csv
import gzip
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from jsqa.degrade import FAMILIES
from jsqa.training import teachers
from jsqa.training.datasets import GENERATED_NOISES
from jsqa.training.labels import LABEL_VERSION, VERSIONS, CorpusSpec, build_corpus, rerender

SPEC = CorpusSpec(n_clips=8, seconds=1.0, seed=11)


class FakeTeacher:
    """Scores by how much of the clean signal survives; can die after ``fail_after`` clips."""

    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, clean, degraded):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("labelling killed")
        err = np.mean((degraded - clean) ** 2) / max(np.mean(clean**2), 1e-12)
        return float(1.0 + 4.0 / (1.0 + 10 * err))

    @staticmethod
    def to_mos(value):
        return value


def _rows(path):
    with open(path, newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: int(r["index"]))


def test_labelling_resumes_where_it_was_killed(tmp_path, data_root):
    whole = build_corpus(tmp_path / "whole", SPEC, teachers=[FakeTeacher()], workers=0, progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(tmp_path / "cut", SPEC, teachers=[FakeTeacher(fail_after=3)], workers=0, progress=False)
    assert len(_rows(tmp_path / "cut" / "labels.csv")) == 3
    again = FakeTeacher()
    resumed = build_corpus(tmp_path / "cut", SPEC, teachers=[again], workers=0, progress=False)
    assert again.calls == SPEC.n_clips - 3  # only what was missing
    assert _rows(resumed) == _rows(whole)
    rows = _rows(whole)
    assert [int(r["index"]) for r in rows] == list(range(SPEC.n_clips))
    for r in rows:
        assert float(r["mos"]) == pytest.approx(float(r["fake"]), abs=1e-4)
        if r["condition"] == "clean":
            assert float(r["fake"]) == pytest.approx(5.0, abs=1e-3)


def test_label_is_the_mean_of_the_teachers_that_answered():
    class A:
        name = "pesq_wb"
        to_mos = staticmethod(teachers.pesq_to_mos)

    class B:
        name = "b"
        to_mos = staticmethod(float)

    assert teachers.label({"pesq_wb": 4.64, "b": 3.0}, [A, B]) == pytest.approx(4.0)
    assert teachers.label({"pesq_wb": float("nan"), "b": 3.0}, [A, B]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown teacher"):
        teachers.make_teachers(["nisqa"])


def test_corpus_rerenders_bit_identically_from_its_csv(tmp_path, data_root):
    labels = build_corpus(tmp_path / "a", SPEC, teachers=[FakeTeacher()], workers=0, progress=False)
    packed = tmp_path / "labels.csv.gz"
    with open(labels, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    copy = rerender(packed, tmp_path / "b", SPEC, progress=False)
    assert _rows(copy) == _rows(labels)
    for r in _rows(labels):
        a, _ = sf.read(tmp_path / "a" / r["path"], dtype="int16")
        b, _ = sf.read(tmp_path / "b" / r["path"], dtype="int16")
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="other recipe"):
        rerender(packed, tmp_path / "c", CorpusSpec(n_clips=8, seconds=1.0, seed=12), progress=False)


def test_rerendering_relabels_from_the_teachers_columns(tmp_path, data_root):
    labels = build_corpus(tmp_path / "a", SPEC, teachers=[FakeTeacher()], workers=0, progress=False)
    rows = _rows(labels)
    for r in rows:
        r.update(mos="9.9", pesq_wb="1.04", distillmos="2.0")
    with open(labels, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    copy = rerender(labels, tmp_path / "b", SPEC, progress=False)
    lifted = teachers.pesq_to_mos(1.04)
    assert [float(r["mos"]) for r in _rows(copy)] == pytest.approx([(lifted + 2.0) / 2] * len(rows), abs=1e-4)


def test_pesq_scale_is_lifted_at_its_floor_and_kept_above():
    lqo = np.linspace(0.5, 4.7, 2000)
    mos = np.array([teachers.pesq_to_mos(v) for v in lqo])
    assert np.all(np.diff(mos) >= 0) and np.max(np.diff(mos)) < 0.02  # monotone, no step
    assert mos[0] == pytest.approx(teachers.FLOOR_LIFT[0][1])
    assert teachers.pesq_to_mos(4.64) == pytest.approx(5.0)
    above = lqo > 3.0
    stretched = 1.0 + 4.0 * (lqo[above] - 1.04) / (4.64 - 1.04)
    np.testing.assert_allclose(mos[above], np.clip(stretched, 1, 5), atol=1e-9)


def test_a_new_corpus_draws_every_family_of_the_registry():
    # A family added to the registry needs a new corpus version, or new corpora never draw it.
    assert VERSIONS[LABEL_VERSION].families == tuple(FAMILIES)
    assert max(VERSIONS) == LABEL_VERSION


def test_a_corpus_made_before_a_family_was_added_still_rerenders(tmp_path, data_root):
    old = CorpusSpec(n_clips=16, seconds=1.0, seed=11, version=2)
    labels = build_corpus(tmp_path / "v2", old, teachers=[FakeTeacher()], workers=0, progress=False)
    assert {"vocoder"} <= set(VERSIONS[3].families) - set(VERSIONS[2].families)
    assert not any("vocoder" in r["condition"] for r in _rows(labels))
    copy = rerender(labels, tmp_path / "again", SPEC, progress=False)
    for r in _rows(copy):
        a, _ = sf.read(tmp_path / "v2" / r["path"], dtype="int16")
        b, _ = sf.read(tmp_path / "again" / r["path"], dtype="int16")
        assert np.array_equal(a, b)


def _noises(rows):
    return [step["noise"] for r in rows for step in json.loads(r["recipe"]) if "noise" in step]


def test_a_corpus_made_before_the_new_noises_still_rerenders(tmp_path, data_root):
    added = set(VERSIONS[4].generated_noises) - set(VERSIONS[3].generated_noises)
    assert added == {"modulated", "crackle"}
    old = CorpusSpec(n_clips=40, seconds=1.0, seed=12, version=3)
    labels = build_corpus(tmp_path / "v3", old, teachers=[FakeTeacher()], workers=0, progress=False)
    used = _noises(_rows(labels))
    assert set(used) & set(GENERATED_NOISES) and not set(used) & added  # generated noise, of version 3's kinds
    copy = rerender(labels, tmp_path / "again", CorpusSpec(seconds=1.0, seed=12), progress=False)
    for r in _rows(copy):
        a, _ = sf.read(tmp_path / "v3" / r["path"], dtype="int16")
        b, _ = sf.read(tmp_path / "again" / r["path"], dtype="int16")
        assert np.array_equal(a, b)
    # The newest version draws the new noises too, and generates more of its noise.
    new = build_corpus(tmp_path / "v4", CorpusSpec(n_clips=120, seconds=1.0, seed=12), teachers=[FakeTeacher()],
                       workers=0, progress=False)
    used = _noises(_rows(new))
    assert set(used) & added
    assert sum(n in VERSIONS[4].generated_noises for n in used) > sum(n in GENERATED_NOISES for n in _noises(_rows(labels)))


def test_dev_check_measures_each_teacher_and_the_label_against_listeners(data_root):
    from jsqa.training.dev_check import check_dev

    report = check_dev(["p835_refcond"], ["pesq_wb"], progress=False)["p835_refcond"]
    assert set(report) == {"pesq_wb", "label"}
    assert report["label"] == report["pesq_wb"]  # one teacher: the label is its score
    assert report["label"]["n"] == 78 and report["label"]["pearson"] > 0.85
    assert 1.0 <= report["label"]["mean"] <= 5.0


def test_label_without_out_says_what_is_missing(capsys):
    from jsqa.training import cli

    assert cli.main(["label", "--clips", "1"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_talker_normalised_label_evens_out_the_talkers_clean_scores():
    def row(talker, condition, pesq, dm):
        return {"talker": talker, "condition": condition, "pesq_wb": str(pesq), "distillmos": str(dm)}

    rows = [row("dull", "clean", 4.64, 3.0), row("dull", "clean", 4.64, 3.4),
            row("bright", "clean", 4.64, 4.2), row("bright", "clean", 4.64, 4.2),
            row("dull", "noise", 1.5, 2.0), row("dull", "noise", 1.2, 1.5), row("dull", "mnru", 1.1, 1.0),
            row("bright", "noise", 1.5, 2.0), row("unheard", "noise", 1.5, 2.0),
            row("dull", "noise", float("nan"), float("nan"))]
    plain = [teachers.label_of_row(r) for r in rows]
    out = teachers.talker_normalised(rows)
    target = np.mean([3.0, 3.4, 4.2, 4.2])
    # Every talker's clean clips now average the mean of all clean clips (PESQ-WB gives them 5).
    assert np.mean(out[:2]) == pytest.approx((5 + target) / 2)
    assert np.mean(out[2:4]) == pytest.approx((5 + target) / 2)
    # Within a talker the order stays, the floor stays the floor, and the PESQ-WB half is untouched.
    assert out[4] > out[5] > out[6]
    assert out[6] == pytest.approx(plain[6])
    # The same DistillMOS score reads higher from a talker DistillMOS rates low when clean.
    assert out[4] > plain[4] and out[7] < plain[7]
    # A talker with no clean clip keeps its score; a clip no teacher scored stays unlabelled.
    assert out[8] == pytest.approx(plain[8])
    assert np.isnan(out[9])
    with pytest.raises(ValueError, match="no clean clips"):
        teachers.talker_normalised(rows[4:])
