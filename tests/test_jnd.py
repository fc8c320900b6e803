"""The JND pair sampler on real speech and noise recordings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jsqa.degrade import TalkerPool
from jsqa.jnd import JNDSampler, NoiseBank, positive_mask
from jsqa.data import list_audio


@pytest.fixture(scope="module")
def pools(speech_dir, noise_dir):
    speech = list_audio(speech_dir / "asterisk_en")[:40] + list_audio(speech_dir / "asterisk_it")[:40]
    noise = list_audio(noise_dir / "pst_background_samples") + list_audio(noise_dir / "flare_rain")
    return TalkerPool.from_files(speech), NoiseBank(noise, ("white", "pink"))


def sampler(pools, **kw):
    speech, noise = pools
    return JNDSampler(speech, noise, **{"crop_seconds": 0.5, "groups": 3, "per_group": 3, **kw})


def test_positive_mask_follows_the_jnd():
    p = [
        {"kind": "noise", "snr_db": 10.0},
        {"kind": "noise", "snr_db": 12.9},   # 2.9 dB from the first: positive
        {"kind": "noise", "snr_db": 13.0},   # 3.0 dB from the first: negative
        {"kind": "echo", "snr_db": 10.0, "delay_ms": 100.0, "attenuation_db": 20.0},  # other kind
        {"kind": "codec", "snr_db": None, "codec": ("opus", 8)},
        {"kind": "codec", "snr_db": None, "codec": ("opus", 8)},
        {"kind": "codec", "snr_db": None, "codec": ("opus", 12)},
    ]
    m = positive_mask(p, 3.0)
    assert m[0, 1] and m[1, 2] and not m[0, 2]
    assert not m[0, 3] and not m[3].any()
    assert m[4, 5] and not m[4, 6]
    assert (m == m.T).all() and not m.diagonal().any()


def test_groups_are_positives_with_different_speech(pools):
    b = sampler(pools, seed=3).batch()
    assert b.audio.shape == (9, 8000) and b.audio.dtype == np.float32
    for g in range(3):
        idx = np.flatnonzero(b.groups == g)
        snrs = [b.params[i]["snr_db"] for i in idx]
        assert max(snrs) - min(snrs) < 3.0
        assert b.positives[np.ix_(idx, idx)][~np.eye(len(idx), dtype=bool)].all()
        # Members carry different speech (and noise): the waveforms are unrelated.
        c = np.corrcoef(b.audio[idx])
        assert np.abs(c[~np.eye(len(idx), dtype=bool)]).max() < 0.9
    # Pairs one JND apart or more are negatives, wherever they come from.
    snr = np.array([p["snr_db"] for p in b.params])
    far = np.abs(snr[:, None] - snr[None, :]) >= 3.0
    assert not (b.positives & far).any()
    assert (b.positives == (~far & ~np.eye(9, dtype=bool))).all()


def test_snr_sets_the_degradation(pools):
    """A mixture at a lower SNR deviates more from its clean speech."""
    speech, _ = pools
    s = sampler(pools, seed=0)
    clean = speech.crop(8000, np.random.default_rng(1))
    errors = []
    for snr in (0.0, 20.0):
        s.rng = np.random.default_rng(1)
        y = s.render({"kind": "noise", "snr_db": snr}, 8000)
        errors.append(float(np.mean((y - clean) ** 2)))
    assert errors[0] > 10 * errors[1]


def test_deterministic_for_a_seed_and_manifest(pools, tmp_path):
    a = sampler(pools, seed=7, manifest=tmp_path / "m.jsonl")
    b = sampler(pools, seed=7)
    c = sampler(pools, seed=8)
    ba, bb, bc = a.batch(), b.batch(), c.batch()
    assert np.array_equal(ba.audio, bb.audio) and ba.params == bb.params
    assert not np.array_equal(ba.audio, bc.audio)
    state = a.state()
    nxt = a.batch()
    a.set_state(state)
    assert np.array_equal(a.batch().audio, nxt.audio)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["items"] == json.loads(json.dumps(ba.params))


def test_all_impairments_mode(pools):
    s = sampler(pools, seed=1, impairments="all", groups=6, per_group=2, kind_weights={
        "noise": 1, "clipping": 1, "packet_loss": 1, "narrowband": 1, "reverb": 1})
    kinds = set()
    for _ in range(3):
        b = s.batch()
        kinds |= {p["kind"] for p in b.params}
        k = np.array([p["kind"] for p in b.params])
        assert not (b.positives & (k[:, None] != k[None, :])).any()
        assert np.isfinite(b.audio).all() and np.abs(b.audio).max() <= 1.0
    assert len(kinds) >= 3


def test_rejects_unknown_impairments(pools):
    with pytest.raises(ValueError, match="noise' or 'all"):
        sampler(pools, impairments="codecs")
