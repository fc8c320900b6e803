"""The teacher-labelled corpus: clean speech from many (pseudo-)talkers through impairment
chains drawn from :mod:`jsqa.degrade`, scored by a teacher ensemble.

A corpus is its recipe: clip ``i`` of a corpus is rendered from the generator seeded
``(seed, i, split)`` alone, so any clip can be rebuilt bit-identically without rerunning the
teachers (``jsqa-train label --render``). ``labels.csv`` holds, per clip, its index, path,
label (``mos``: the plain mean of the teachers' MOS-scale scores), condition, talker, the
recipe as JSON and one column per teacher in that teacher's own units, so other mixes can
be tried without relabelling.

The ``train`` split draws 0-3 families per clip (clean too: the teachers say what clean
speech scores); the ``test`` split (held-out talkers and noises) gives each clip exactly one
family, in turn, plus clean clips, so accuracy can be read per family.

Labelling is resumable (rows are appended as clips finish; a rerun skips done indices) and
runs ``workers`` processes. Clips are 4 s: training crops 3 s windows from them, and
DistillMOS costs the same for 3 s as for 7.68 s.
"""

from __future__ import annotations

import csv
import gzip
import json
import multiprocessing as mp
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from rich.progress import Progress

from jsqa.audio import SAMPLE_RATE, write_audio
from jsqa.degrade import TalkerPool, build_chain, draw_recipe
from jsqa.jnd import NoiseBank

from . import teachers as teach
from .datasets import GENERATED_NOISES, SPEECHOCEAN, noise_files, talkers

LABEL_VERSION = 4
COLUMNS = ("index", "path", "mos", "condition", "talker", "recipe")


@dataclass(frozen=True)
class Version:
    """What one corpus version draws. A version added later must not change how an older
    corpus re-renders, so each is declared whole here and never edited."""

    families: tuple[str, ...]
    # Noises generated rather than recorded (the training split; the test split uses
    # held-out recordings alone), and how often a noise is generated.
    generated_noises: tuple[str, ...] = GENERATED_NOISES
    generated_fraction: float = 0.25


_V2_FAMILIES = ("reverb", "echo", "talker", "noise", "mnru", "clipping", "level", "narrowband",
                "codec", "chops", "packet_loss")
_V3_FAMILIES = ("reverb", "echo", "talker", "noise", "mnru", "clipping", "level", "narrowband",
                "codec", "vocoder", "chops", "packet_loss")
VERSIONS = {
    2: Version(_V2_FAMILIES),
    3: Version(_V3_FAMILIES),
    # Noises of random spectrum and swell and random crackle, and half the noise generated:
    # the held-out gap is as much unheard noises as unheard talkers.
    4: Version(_V3_FAMILIES, (*GENERATED_NOISES, "modulated", "crackle"), 0.5),
}


def test_kinds(version: int = LABEL_VERSION) -> tuple[str, ...]:
    """What the test split's clips are, in turn: clean, then each family of that version."""
    return ("clean", *VERSIONS[version].families)


@dataclass(frozen=True)
class CorpusSpec:
    split: str = "train"
    n_clips: int = 20000
    seconds: float = 4.0
    seed: int = 0
    clean_fraction: float = 0.12
    version: int = LABEL_VERSION


class _Sources:
    """Noise and competing talkers for one split of one corpus version (what ``build_chain``
    draws from)."""

    def __init__(self, split: str, speech: str | None, noise: str | None, version: int = LABEL_VERSION):
        self.pool = TalkerPool(*_balanced(talkers(speech, split)))
        babble = [f for files in self.pool.talkers.values() for f in files[:3]]
        drawn = VERSIONS[version]
        # The test split uses only held-out recordings: generated noises are seen in training.
        self.bank = NoiseBank(noise_files(noise, split), drawn.generated_noises if split == "train" else (),
                              babble_talkers=babble, generated_fraction=drawn.generated_fraction)

    def noise(self, n, rng):
        return self.bank.segment(n, rng)

    def talker(self, n, rng):
        return self.pool.crop(n, rng)


def _balanced(by_talker: dict) -> tuple[dict, dict]:
    """Half the draws from the many read-speech talkers of speechocean762 (mostly children,
    L2 English, home microphones), half from the studio and IVR voices: evenly by talker
    within each half, so neither population defines what clean sounds like."""
    many = [t for t, files in by_talker.items() if any(SPEECHOCEAN in f.parts for f in files)]
    few = [t for t in by_talker if t not in many]
    weights = {t: 0.5 / len(many) for t in many} | {t: 0.5 / len(few) for t in few} if many and few else None
    return by_talker, weights


def render(spec: CorpusSpec, index: int, sources: _Sources) -> tuple[np.ndarray, np.ndarray, dict]:
    """Clip ``index``: ``(clean, degraded, info)``, both quantised to 16 bit as stored."""
    rng = np.random.default_rng([spec.seed, index, 0 if spec.split == "train" else 1])
    n = int(round(spec.seconds * SAMPLE_RATE))
    talker, clean = sources.pool.clip(n, rng)
    if spec.split == "test":
        kinds = test_kinds(spec.version)
        kind = kinds[index % len(kinds)]
        recipe = [] if kind == "clean" else draw_recipe(rng, only=kind)
    else:
        recipe = draw_recipe(rng, clean_fraction=spec.clean_fraction, families=VERSIONS[spec.version].families)
    deg = build_chain(recipe, n, rng, sources)(clean, rng) if recipe else clean
    info = {"talker": talker, "recipe": recipe,
            "condition": "+".join(s["kind"] for s in recipe) or "clean"}
    return _quantise(clean), _quantise(deg), info


def _quantise(x: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(x, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


_WORKER: dict = {}


def _init_worker(spec, speech, noise, teacher_names, out):
    import torch

    torch.set_num_threads(1)
    _WORKER.update(spec=spec, sources=_Sources(spec.split, speech, noise, spec.version), out=Path(out),
                   teachers=teach.make_teachers(teacher_names))


def _label_one(index: int) -> dict:
    w = _WORKER
    clean, deg, info = render(w["spec"], index, w["sources"])
    rel = Path("clips") / f"{index:06d}.flac"
    write_audio(w["out"] / rel, deg)
    values = {t.name: t(clean, deg) for t in w["teachers"]}
    return {"index": index, "path": rel.as_posix(), "mos": teach.label(values, w["teachers"]),
            "condition": info["condition"], "talker": info["talker"],
            "recipe": _recipe_json(info), **values}


def done_indices(labels_path: Path) -> set[int]:
    if not labels_path.exists():
        return set()
    with open(labels_path, newline="") as fh:
        return {int(r["index"]) for r in csv.DictReader(fh)}


def build_corpus(out_dir: str | Path, spec: CorpusSpec, speech: str | None = None, noise: str | None = None,
                 teachers=teach.DEFAULT_TEACHERS, workers: int = 2, progress: bool = True) -> Path:
    """Label (or resume labelling) a corpus; returns its ``labels.csv``.

    ``teachers``: names from :data:`teachers.TEACHERS` or teacher objects (with ``name``,
    ``__call__(clean, degraded)`` and ``to_mos``); objects need ``workers=0`` (in process).
    """
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    names = [t if isinstance(t, str) else t.name for t in teachers]
    meta = {**asdict(spec), "speech": str(speech or "shared/speech"), "noise": str(noise or "shared/noise"),
            "teachers": names, "label": "mean of the teachers' MOS-scale scores"}
    meta_path, labels_path = out / "corpus.json", out / "labels.csv"
    if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
        raise ValueError(f"{out} holds a corpus built with other parameters; use another --out")
    meta_path.write_text(json.dumps(meta, indent=1))
    done = done_indices(labels_path)
    todo = [i for i in range(spec.n_clips) if i not in done]
    fields = [*COLUMNS, *names]
    new = not labels_path.exists()
    with open(labels_path, "a", newline="") as fh, Progress(disable=not progress) as bar:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()
        task = bar.add_task(f"labelling {spec.split}", total=spec.n_clips, completed=spec.n_clips - len(todo))
        if workers:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, _init_worker, (spec, speech, noise, names, out)) as pool:
                rows = pool.imap_unordered(_label_one, todo, chunksize=4)
                _write_rows(rows, writer, fh, bar, task)
        else:
            _init_worker(spec, speech, noise, teachers, out)
            _write_rows(map(_label_one, todo), writer, fh, bar, task)
    return labels_path


def _write_rows(rows, writer, fh, bar, task) -> None:
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
        fh.flush()
        bar.advance(task)


def rerender(labels_csv: str | Path, out_dir: str | Path, spec: CorpusSpec, speech: str | None = None,
             noise: str | None = None, progress: bool = True) -> Path:
    """Render the clips a (possibly gzipped) labels CSV describes into ``out_dir`` and write
    its ``labels.csv`` there, labelled from its teachers' columns, without running any teacher."""
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    opener = gzip.open if str(labels_csv).endswith(".gz") else open
    with opener(labels_csv, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    spec, sources = _version_of(rows, spec, speech, noise)
    with Progress(disable=not progress) as bar:
        for row in bar.track(rows, description="rendering"):
            path = out / row["path"]
            if path.exists():
                continue
            _, deg, info = render(spec, int(row["index"]), sources)
            if _recipe_json(info) != row["recipe"]:
                raise ValueError(f"clip {row['index']} renders another recipe: the corpus was made "
                                 "with other data or code")
            write_audio(path, deg)
    for row in rows:
        row["mos"] = f"{teach.label_of_row(row):.4f}"
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out / "labels.csv"


def _version_of(rows: list[dict], spec: CorpusSpec, speech: str | None, noise: str | None,
                probes: int = 4, noise_probes: int = 40) -> tuple[CorpusSpec, _Sources]:
    """``spec`` at the newest corpus version that renders the recipes of the first few
    non-clean rows and of the first few dozen with a noise, and its sources. Clean clips
    render alike in every version, and the CSV does not record the version. Versions that
    differ only in their noises draw the same noise in most clips: a quarter of noise clips
    tell versions 3 and 4 apart, so 40 of them all agree with the wrong one once in 10^5."""
    probe = [r for r in rows if r["recipe"] != "[]"][:probes]
    probe += [r for r in rows if '"noise":' in r["recipe"]][:noise_probes]
    for version in sorted(VERSIONS, reverse=True):
        candidate, sources = replace(spec, version=version), _Sources(spec.split, speech, noise, version)
        if all(_recipe_json(render(candidate, int(r["index"]), sources)[2]) == r["recipe"] for r in probe):
            return candidate, sources
    return spec, _Sources(spec.split, speech, noise, spec.version)


def _recipe_json(info: dict) -> str:
    return json.dumps(info["recipe"], separators=(",", ":"))
