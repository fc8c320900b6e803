"""bench/model_report.py, the model card's accuracy tables, run end to end on the tiny model."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np

REPORT = Path(__file__).resolve().parents[1] / "bench" / "model_report.py"


def _load():
    spec = importlib.util.spec_from_file_location("model_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_covers_every_table_of_the_card(tiny_onnx_model, corpus, tmp_path, capsys):
    report = _load()
    with open(corpus, newline="") as fh:
        rows = list(csv.DictReader(fh))
    per_condition = Counter(r["condition"] for r in rows)
    conditions = set(per_condition)
    # The "test" lacks one condition of the "training corpus", which --fit then leaves out too.
    left_out = sorted(conditions)[0]
    test = tmp_path / "test.csv"
    with open(test, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(corpus.parent / r["path"])} for r in rows if r["condition"] != left_out)
    out = tmp_path / "report.json"
    assert report.main(["--model", str(tiny_onnx_model), "--test", str(test), "--fit", str(corpus),
                        "--fit-clips", "2", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rep = json.loads(out.read_text())

    assert {name: r["n"] for name, r in rep["dev"].items()} == {"p835_refcond": 78, "codec_mushra": 128, "warpq": 8}
    assert all(-1 <= r["pearson"] <= 1 and r["rmse_raw"] > 0 for r in rep["dev"].values())
    kept = {c: n for c, n in per_condition.items() if c != left_out}
    assert set(rep["families"]) == set(kept) | {"all"} and rep["families"]["all"]["n"] == sum(kept.values())
    assert {c: r["n"] for c, r in rep["fit"].items()} == {"all": sum(min(2, n) for n in kept.values()),
                                                          **{c: min(2, n) for c, n in kept.items()}}
    # Each family is also measured apart on speechocean762's talkers and on the others.
    everything = rep["families"]["all"]
    assert 0 < everything["n_speechocean"] < everything["n"]
    assert all(-1 <= everything[k] <= 1 for k in ("pearson_speechocean", "pearson_other"))
    assert "speechocean762 talkers / others" in printed
    # The noise family per noise: each clip's noise folder, from its recipe.
    noises = Counter(json.loads(r["recipe"])[0]["noise"].split("/")[0] for r in rows if r["condition"] == "noise")
    assert noises and left_out != "noise"
    by_noise = rep["families"]["noise"]["by_noise"]
    assert {k: r["n"] for k, r in by_noise.items()} == dict(noises)
    assert all(np.isfinite(r["bias"]) for r in by_noise.values())
    assert "held-out synthetic family: noise, per noise" in printed
    clean = rep["clean"]
    assert set(clean["folders"]) == set(report.CLEAN_FOLDERS) | {"p835_refcond c0"}
    talker_means = list(clean["talkers"].values())
    assert np.isclose(clean["talker_spread"], max(talker_means) - min(talker_means))
    assert clean["window_sd"]["files"] > 0 and clean["window_sd"]["mean"] >= 0
    assert clean["speechocean_heldout"]["n"] > 0 and "teacher_mean" not in clean["speechocean_heldout"]
    assert all(r["floor_db"] > 0 for r in clean["folders"].values())
    # Transparent coding: the clean files of the folders not already MP3, as they are and coded.
    coding = rep["coding"]
    assert coding["n"] == sum(min(10, r["n"]) for name, r in clean["folders"].items() if name not in report.CODED_FOLDERS)
    assert list(coding["model"]) == ["clean"] + [f"{c} {k}" for c, k in report.TRANSPARENT_CODECS]
    assert all(1 <= m <= 5 for m in coding["model"].values()) and "distillmos" not in coding
    assert list(rep["pauses"]["snr"]) == ["30", "20", "10", "5", "0", "-5"]
    for name in ("p835_refcond", "family, clips trained on", "Spread between talker means", "Window-to-window SD", "SNR sweep", "MNRU sweep",
                 "noise floor below speech", "clean files, transparent coding"):
        assert name in printed
