"""The model card's accuracy tables for one JSQA model, from one command.

    python bench/model_report.py [--model FILE] [--test runs/labels-test/labels.csv] [--teacher]
                                 [--fit runs/labels-train/labels.csv]

* Rated dev sets (human MOS, never trained on): per-file Pearson, Spearman, RMSE after a
  third-order monotonic mapping (ITU-T P.1401) and raw RMSE (alerts fire on the raw scale).
* The held-out synthetic test (held-out talkers and noises, teacher labels): Pearson per
  impairment family against its label, also apart for the two populations of held-out talkers
  (speechocean762's and the IVR voice), and the noise family per noise. ``--fit`` makes the same table on clips the model
  trained on (``--fit-clips`` per condition, the test's conditions only when ``--test`` is
  given): a family low on both underfits, a family low only held out does not generalise.
* Clean speech never trained on: mean per folder and per talker, and the spread between
  talkers; the held-out speechocean762 talkers against the teachers' mean on the same files
  (``--teacher`` runs DistillMOS for that; PESQ-WB of a clean file against itself is 5).
  Each folder's noise floor: how far its quietest tenth of 20 ms frames lies below its active
  speech level (P.56).
* Transparent coding: held-out clean files not already lossy-coded, through MP3 and Opus at
  32-64 kbit/s (``--teacher`` adds DistillMOS and PESQ-WB): does the model mark down coding
  that listeners barely hear?
* Pauses: a clean file with exact-zero pauses against the same file with -60 dBFS noise
  in them; SNR 30..-5 dB and MNRU Q 40..0 dB on a clean held-out file (monotonic?).

Prints markdown tables; ``--json`` also writes every number.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from jsqa import impairments as imp
from jsqa import metrics
from jsqa.audio import SAMPLE_RATE, load_audio
from jsqa.data import find_data_root, list_audio
from jsqa.levels import active_speech_level, frame_energies_db
from jsqa.noises import NOISE_DBFS, pink
from jsqa.rated import load_rated_set, rated_set_path
from jsqa.scorer import DEFAULT_MODEL, Scorer
from jsqa.training.datasets import RATED_SETS
from jsqa.training.labels import COLUMNS as LABEL_COLUMNS
from jsqa.training.teachers import TEACHERS, DistillMOS, make_teachers, pesq_to_mos

REFERENCE_FREE = DistillMOS.name
SPEECHOCEAN_TALKER = "SPEAKER"  # speechocean762's talker ids: SPEAKER0003, ...
CLEAN_FOLDERS = ("asterisk_ru", "cmu_arctic", "librispeech_examples", "pocketsphinx")
# Both are cut from LibriVox's MP3s: already coded, so not coded again.
CODED_FOLDERS = ("librispeech_examples", "pocketsphinx")
TRANSPARENT_CODECS = (("mp3", 32), ("mp3", 48), ("mp3", 64), ("opus", 32), ("opus", 48), ("opus", 64))


def predict(scorer: Scorer, signals: list[np.ndarray]) -> np.ndarray:
    return file_scores(scorer.score_many(signals))


def file_scores(results) -> np.ndarray:
    """Each file's MOS, or the mean of all its windows where no window has speech."""
    return np.asarray([r.mos if r.mos is not None else r.model_mean for r in results])


def dev_sets(scorer: Scorer) -> dict:
    out = {}
    for name in RATED_SETS:
        rated = load_rated_set(rated_set_path(name))
        pred = predict(scorer, [load_audio(f) for f in rated.files])
        out[name] = {"n": len(pred), "pearson": metrics.pearson(pred, rated.mos),
                     "spearman": metrics.spearman(pred, rated.mos),
                     "rmse3": metrics.rmse_mapped(pred, rated.mos, 3), "rmse_raw": metrics.rmse(pred, rated.mos),
                     "pred_mean": float(pred.mean()), "true_mean": float(rated.mos.mean())}
    return out


def families(scorer: Scorer, test_csv: Path, per_condition: int | None = None,
             conditions: set[str] | None = None) -> dict:
    with open(test_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if np.isfinite(float(r["mos"]))
                and (conditions is None or r["condition"] in conditions)]
    if per_condition:
        rows = _sample(rows, per_condition)
    pred = predict(scorer, [load_audio(test_csv.parent / r["path"]) for r in rows])
    label = np.asarray([float(r["mos"]) for r in rows])
    by = defaultdict(list)
    for i, r in enumerate(rows):
        by[r["condition"]].append(i)
    # With two teachers, how far they agree within a family bounds what a student can learn:
    # an intrusive teacher's variation that the degraded audio does not show is noise to it.
    teachers = [c for c in rows[0] if c not in LABEL_COLUMNS]
    scores = np.asarray([[float(r[c]) for c in teachers] for r in rows]) if len(teachers) == 2 else None
    # The held-out talkers are two populations: speechocean762's read speech on home microphones
    # (many children) and an IVR voice; a family can generalise to one and not the other.
    speechocean = np.asarray([r["talker"].startswith(SPEECHOCEAN_TALKER) for r in rows])
    out = {"all": {"n": len(rows), "pearson": _enough(metrics.pearson, pred, label), "rmse": metrics.rmse(pred, label),
                   **_by_population(pred, label, speechocean)}}
    for cond, idx in sorted(by.items()):
        p, t = pred[idx], label[idx]
        out[cond] = {"n": len(idx), "pearson": _enough(metrics.pearson, p, t) if cond != "clean" else float("nan"),
                     "rmse": _enough(metrics.rmse, p, t), "pred_mean": float(p.mean()), "label_mean": float(t.mean())}
        if cond != "clean":
            out[cond] |= _by_population(p, t, speechocean[idx])
        if scores is not None and cond != "clean":
            out[cond]["teacher_agreement"] = _enough(metrics.pearson, scores[idx, 0], scores[idx, 1])
        # DistillMOS is a reference-free model too: what it reaches against the label is a
        # floor on what a reference-free student could reach on that family.
        if REFERENCE_FREE in teachers and cond != "clean":
            out[cond]["reference_free_vs_label"] = _reference_free(rows, idx, t)
        if cond == "noise":
            out[cond]["by_noise"] = _by_noise(rows, idx, pred, label, REFERENCE_FREE in teachers)
    return out


def _reference_free(rows: list[dict], idx: list[int], label: np.ndarray) -> float:
    free = np.asarray([float(rows[i][REFERENCE_FREE]) for i in idx])
    ok = np.isfinite(free)
    return _enough(metrics.pearson, free[ok], label[ok])


def _by_noise(rows: list[dict], idx: list[int], pred: np.ndarray, label: np.ndarray, free: bool) -> dict:
    """The noise family per noise (its recording's folder): held-out noises do not generalise
    alike, and a mean score above the label says the model hears that noise as milder."""
    by = defaultdict(list)
    for i in idx:
        by[json.loads(rows[i]["recipe"])[0]["noise"].split("/")[0]].append(i)
    out = {}
    for name, group in sorted(by.items()):
        p, t = pred[group], label[group]
        out[name] = {"n": len(group), "pearson": _enough(metrics.pearson, p, t), "bias": float(np.mean(p - t))}
        if free:
            out[name]["reference_free_vs_label"] = _reference_free(rows, group, t)
    return out


def _by_population(pred: np.ndarray, label: np.ndarray, speechocean: np.ndarray) -> dict:
    return {"n_speechocean": int(speechocean.sum()),
            "pearson_speechocean": _enough(metrics.pearson, pred[speechocean], label[speechocean]),
            "pearson_other": _enough(metrics.pearson, pred[~speechocean], label[~speechocean])}


def _sample(rows: list[dict], per_condition: int) -> list[dict]:
    """Up to ``per_condition`` rows of each condition, the same ones every run."""
    by = defaultdict(list)
    for r in rows:
        by[r["condition"]].append(r)
    rng = np.random.default_rng(0)
    return [r for _, group in sorted(by.items())
            for r in (group if len(group) <= per_condition else
                      [group[i] for i in sorted(rng.choice(len(group), per_condition, replace=False))])]


def _enough(metric, pred: np.ndarray, true: np.ndarray) -> float:
    """The metric, or NaN for a family too small to measure."""
    return metric(pred, true) if len(pred) >= 3 else float("nan")


def _talker(path: Path) -> str:
    folder = path.parent.name
    if folder == "cmu_arctic":
        return f"{folder}/{path.stem.split('_')[3]}"
    if folder == "librispeech_examples":
        return f"{folder}/{path.stem.split('-')[0]}"
    return folder


def clean_files() -> dict[str, list[Path]]:
    """Clean speech never trained on, by folder (p835_refcond's clean reference as one)."""
    root = find_data_root()
    files = {name: list_audio(root / "speech" / name) for name in CLEAN_FOLDERS}
    p835 = load_rated_set(rated_set_path("p835_refcond"))
    files["p835_refcond c0"] = [f for f, c in zip(p835.files, p835.conditions) if c == "c0"]
    return files


def floor_below_speech(x: np.ndarray) -> float:
    """dB from the active speech level down to the level of the quietest tenth of frames."""
    return active_speech_level(x) - float(np.percentile(frame_energies_db(x), 10))


def clean_speech(scorer: Scorer, teachers: dict) -> dict:
    out, talkers, window_sd = {"folders": {}}, defaultdict(list), []
    for name, paths in clean_files().items():
        signals = [load_audio(f) for f in paths]
        results = scorer.score_many(signals)
        pred = file_scores(results)
        window_sd += [float(np.std([w.mos for w in r.windows])) for r in results if len(r.windows) >= 3]
        out["folders"][name] = {"n": len(paths), "mean": float(pred.mean()), "min": float(pred.min()),
                                "max": float(pred.max()),
                                "floor_db": float(np.mean([floor_below_speech(x) for x in signals]))}
        for f, m in zip(paths, pred):
            talkers[_talker(f) if "p835" not in name else f"p835/{f.stem.split('_')[1]}"].append(float(m))
    means = {t: float(np.mean(v)) for t, v in talkers.items()}
    out["talkers"] = means
    out["talker_spread"] = max(means.values()) - min(means.values())
    # How much the score of clean speech moves from one 3 s window to the next within a file:
    # what a live monitor shows as jitter on a clean call.
    out["window_sd"] = {"files": len(window_sd), "mean": float(np.mean(window_sd)) if window_sd else float("nan")}
    out["speechocean_heldout"] = _speechocean(scorer, teachers)
    return out


def _speechocean(scorer: Scorer, teachers: dict) -> dict:
    from jsqa.training.datasets import talkers

    held = [f for t, fs in talkers(split="test").items() if t.startswith("SPEAKER") for f in fs]
    signals = [load_audio(f) for f in held]
    pred = predict(scorer, signals)
    out = {"n": len(held), "model_mean": float(pred.mean())}
    if REFERENCE_FREE in teachers:
        dist = np.asarray([teachers[REFERENCE_FREE](x, x) for x in signals])
        out |= {"distillmos_mean": float(np.nanmean(dist)),
                "teacher_mean": float(np.nanmean((dist + pesq_to_mos(4.64)) / 2))}
    return out


def transparent_coding(scorer: Scorer, teachers: dict, per_folder: int = 10, seconds: float = 8.0) -> dict:
    """Mean scores of clean files (up to ``per_folder`` a folder, the first ``seconds``) as they
    are and through each of ``TRANSPARENT_CODECS``."""
    files = [f for name, paths in clean_files().items() if name not in CODED_FOLDERS for f in paths[:per_folder]]
    clean = [load_audio(f)[: int(seconds * SAMPLE_RATE)] for f in files]
    conditions = {"clean": clean} | {
        f"{codec} {kbps}": [imp.Codec(codec=codec, bitrate=kbps)(x, np.random.default_rng(0)) for x in clean]
        for codec, kbps in TRANSPARENT_CODECS}
    out = {"n": len(files), "model": {k: float(predict(scorer, v).mean()) for k, v in conditions.items()}}
    for name, t in teachers.items():
        out[name] = {k: float(np.nanmean([t.to_mos(t(c, y)) for c, y in zip(clean, v)]))
                     for k, v in conditions.items()}
    return out


def pauses_and_sweeps(scorer: Scorer) -> dict:
    root = find_data_root() / "speech"
    rng = np.random.default_rng(0)
    utterances = [load_audio(f) for f in list_audio(root / "cmu_arctic")[:4]]
    gap = np.zeros(int(0.8 * 16000), np.float32)
    zeros = np.concatenate([p for u in utterances for p in (u, gap)])
    is_pause = np.concatenate([p for u in utterances for p in (np.zeros(u.size, bool), np.ones(gap.size, bool))])
    hiss = np.where(is_pause, pink(zeros.size, rng) * 10 ** ((-60 - NOISE_DBFS) / 20), zeros).astype(np.float32)
    clean = load_audio(list_audio(root / "librispeech_examples")[0])
    snr = {s: scorer.score(imp.AddNoise(snr_db=s, noise="pink")(clean, np.random.default_rng(1))).model_mean
           for s in (30, 20, 10, 5, 0, -5)}
    mnru = {q: scorer.score(imp.MNRU(q_db=q)(clean, np.random.default_rng(1))).model_mean
            for q in (40, 30, 20, 10, 0)}
    return {"zero_pauses": scorer.score(zeros).mos, "noise_pauses": scorer.score(hiss).mos,
            "snr": snr, "mnru": mnru}


def markdown(rep: dict) -> str:
    lines = ["| dev set (human MOS) | n | Pearson | Spearman | RMSE (3rd-order map) | RMSE raw | mean pred / true |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rep["dev"].items():
        lines.append(f"| {name} | {r['n']} | {r['pearson']:.3f} | {r['spearman']:.3f} | {r['rmse3']:.3f} | "
                     f"{r['rmse_raw']:.3f} | {r['pred_mean']:.2f} / {r['true_mean']:.2f} |")
    for key, title in (("families", "held-out synthetic family"), ("fit", "family, clips trained on")):
        if key not in rep:
            continue
        lines += ["", f"| {title} | n | Pearson vs label | speechocean762 talkers / others | RMSE "
                  "| mean pred / label | teachers agree (r) | DistillMOS vs label (r) |",
                  "|---|---:|---:|---|---:|---|---:|---:|"]
        for name, r in rep[key].items():
            extra = f" | {r['pred_mean']:.2f} / {r['label_mean']:.2f}" if "pred_mean" in r else " | "
            agree = f"{r['teacher_agreement']:.2f}" if "teacher_agreement" in r else ""
            free = f"{r['reference_free_vs_label']:.2f}" if "reference_free_vs_label" in r else ""
            split = (f"{r['pearson_speechocean']:.3f} / {r['pearson_other']:.3f}"
                     if "pearson_speechocean" in r else "")
            lines.append(f"| {name} | {r['n']} | {r['pearson']:.3f} | {split} | {r['rmse']:.3f}{extra} | {agree} "
                         f"| {free} |")
        if "by_noise" in rep[key].get("noise", {}):
            lines += ["", f"| {title}: noise, per noise | n | Pearson vs label | mean pred − label "
                      "| DistillMOS vs label (r) |", "|---|---:|---:|---:|---:|"]
            for name, r in rep[key]["noise"]["by_noise"].items():
                free = f"{r['reference_free_vs_label']:.2f}" if "reference_free_vs_label" in r else ""
                lines.append(f"| {name} | {r['n']} | {r['pearson']:.3f} | {r['bias']:+.2f} | {free} |")
        pairs = [(r["teacher_agreement"], r["pearson"]) for r in rep[key].values() if "teacher_agreement" in r]
        if len(pairs) > 2:
            a, b = np.asarray(pairs).T
            lines.append(f"\nAcross families, the model's Pearson correlates {metrics.pearson(a, b):.2f} "
                         "with the teachers' agreement.")
    c = rep["clean"]
    lines += ["", "| clean speech, never trained on | n | mean | min | max | noise floor below speech, dB |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, r in c["folders"].items():
        lines.append(f"| {name} | {r['n']} | {r['mean']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r['floor_db']:.1f} |")
    so = c["speechocean_heldout"]
    lines += ["", f"Spread between talker means: {c['talker_spread']:.2f} "
              f"({', '.join(f'{t} {m:.2f}' for t, m in sorted(c['talkers'].items()))}).",
              f"Window-to-window SD of the score within a clean file (files of 3+ windows, "
              f"{c['window_sd']['files']}): {c['window_sd']['mean']:.3f}.",
              f"Held-out speechocean762 talkers ({so['n']} files): model {so['model_mean']:.2f}"
              + (f", teachers' mean {so['teacher_mean']:.2f} (DistillMOS {so['distillmos_mean']:.2f})"
                 if "teacher_mean" in so else "") + "."]
    t = rep["coding"]
    names = list(t["model"])
    lines += ["", f"| {t['n']} clean files, transparent coding | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for who, row in t.items():
        if who != "n":
            lines.append(f"| {who} | " + " | ".join(f"{row[k]:.2f}" for k in names) + " |")
    p = rep["pauses"]
    lines += ["", f"Exact-zero pauses {p['zero_pauses']:.2f} vs -60 dBFS noise pauses {p['noise_pauses']:.2f}.",
              "SNR sweep: " + ", ".join(f"{k} dB {v:.2f}" for k, v in p["snr"].items()) + ".",
              "MNRU sweep: " + ", ".join(f"Q {k} dB {v:.2f}" for k, v in p["mnru"].items()) + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--test", type=Path, help="labels.csv of the held-out synthetic test")
    parser.add_argument("--fit", type=Path, help="labels.csv of a training corpus: the family table on clips trained on")
    parser.add_argument("--fit-clips", type=int, default=100, help="clips per condition for --fit (default 100)")
    parser.add_argument("--teacher", action="store_true",
                        help="run the teachers (DistillMOS, PESQ-WB) on held-out clean speech and its coded copies")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    scorer = Scorer(args.model, providers=["CPUExecutionProvider"], intra_threads=args.threads)
    rep = {"model": str(args.model), "dev": dev_sets(scorer)}
    if args.test:
        rep["families"] = families(scorer, args.test)
    if args.fit:
        # A training corpus mixes families; the held-out test's conditions make the tables comparable.
        rep["fit"] = families(scorer, args.fit, per_condition=args.fit_clips,
                              conditions=set(rep["families"]) if "families" in rep else None)
    # Loaded once: DistillMOS takes seconds to build.
    teachers = {t.name: t for t in make_teachers(TEACHERS)} if args.teacher else {}
    rep["clean"] = clean_speech(scorer, teachers)
    rep["coding"] = transparent_coding(scorer, teachers)
    rep["pauses"] = pauses_and_sweeps(scorer)
    print(markdown(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
