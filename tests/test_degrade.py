"""The impairment registry and the clean-speech pool, on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from jsqa import impairments as imp
from jsqa.data import list_audio
from jsqa.degrade import FAMILIES, TalkerPool, build_chain, draw_recipe
from jsqa.degrade.families import same_quality
from jsqa.levels import active_speech_level


class _Sources:
    def __init__(self, pool):
        self.pool = pool

    def noise(self, n, rng):
        return "white", (rng.standard_normal(n) * 0.1).astype(np.float32)

    def talker(self, n, rng):
        return self.pool.crop(n, rng)


@pytest.fixture(scope="module")
def pool(speech_dir):
    files = list_audio(speech_dir / "asterisk_en")[:20] + list_audio(speech_dir / "asterisk_it")[:10]
    return TalkerPool.from_files(files)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_draws_in_range_and_renders(name, pool, clean_speech):
    rng = np.random.default_rng(3)
    fam = FAMILIES[name]
    recipe = draw_recipe(rng, only=name)
    step = recipe[0]
    for key, param in fam.params.items():
        if param.choices:
            assert step[key] in param.choices
        else:
            assert param.low <= step[key] <= param.high
    x = clean_speech[:32000]
    y = build_chain(recipe, x.size, rng, _Sources(pool))(x, rng)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0
    # Level can leave a clip as it is; a low loss rate can lose no packet in 2 s.
    assert not np.array_equal(y, x) or name in ("level", "packet_loss")


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.jnd[1] is not None])
def test_jnd_axis_separates_one_step(name):
    fam = FAMILIES[name]
    key, step = fam.jnd
    param = fam.params[key]
    base = FAMILIES[name].draw(np.random.default_rng(0))
    mid = (param.low * param.high) ** 0.5 if param.log else (param.low + param.high) / 2
    near, far = dict(base), dict(base)
    base[key] = mid
    near[key] = 2 ** (np.log2(mid) + 0.9 * step) if param.log else mid + 0.9 * step
    far[key] = 2 ** (np.log2(mid) + 1.1 * step) if param.log else mid + 1.1 * step
    assert same_quality(base, near) and not same_quality(base, far)
    assert not same_quality(base, {**near, "kind": "other"} if name != "noise" else {"kind": "mnru", "q_db": 1})


def _severity(transform, x, seed=0):
    y = transform(x, np.random.default_rng(seed))
    return float(np.mean((y - x) ** 2) / np.mean(x**2))


@pytest.mark.parametrize("mild, severe", [
    (imp.MNRU(q_db=40), imp.MNRU(q_db=5)),
    (imp.Chops(rate_hz=1), imp.Chops(rate_hz=10)),
    (imp.Overdrive(gain_db=3), imp.Overdrive(gain_db=30)),
    (imp.Overdrive(gain_db=3, soft=True), imp.Overdrive(gain_db=30, soft=True)),
    (imp.Resynthesis(bands=128), imp.Resynthesis(bands=12)),
])
def test_more_severe_parameters_degrade_more(mild, severe, clean_speech):
    x = clean_speech[:48000]
    assert _severity(severe, x) > 3 * _severity(mild, x)


def test_mnru_noise_sits_q_below_the_speech(clean_speech):
    quiet = clean_speech[:48000] * 0.1  # no peak guard at Q 0 dB
    x = quiet.astype(np.float64)
    for q in (0.0, 15.0, 30.0):
        y = imp.MNRU(q_db=q)(quiet, np.random.default_rng(1)).astype(np.float64)
        ratio = 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2))
        assert ratio == pytest.approx(q, abs=0.3)


def test_chops_lose_what_their_rate_says(clean_speech):
    x = np.ones(16000 * 60, np.float32)
    y = imp.Chops(rate_hz=4, min_ms=20, max_ms=60, mode="zero")(x, np.random.default_rng(2))
    assert np.mean(y == 0) == pytest.approx(4 * 0.040, rel=0.15)
    dropped = imp.Chops(rate_hz=4, mode="drop")(clean_speech[:48000], np.random.default_rng(2))
    assert dropped.size == 48000 and not np.array_equal(dropped, clean_speech[:48000])


def test_overdrive_keeps_loudness_and_level_sets_it(clean_speech):
    x = clean_speech[:48000]
    y = imp.Overdrive(gain_db=20)(x, np.random.default_rng(0))
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.01)
    assert np.mean(np.abs(y) >= 0.999 * np.abs(y).max()) > 0.05
    for target in (-45.0, -26.0):
        assert active_speech_level(imp.Level(dbfs=target)(x, None)) == pytest.approx(target, abs=0.5)


def test_talker_pool_draws_talkers_evenly_with_call_pauses(pool):
    rng = np.random.default_rng(5)
    seen, zero_runs = [], 0
    for _ in range(60):
        talker, y = pool.clip(32000, rng)
        seen.append(talker)
        assert y.shape == (32000,) and np.isfinite(y).all() and np.abs(y).max() <= 1.0
        zero_runs += int(np.sum(y == 0) > 3200)  # at least 0.2 s of exact digital zeros
    counts = {t: seen.count(t) for t in set(seen)}
    assert set(counts) == set(pool.names)
    assert max(counts.values()) < 3 * min(counts.values())  # 20 files of one voice, 10 of another
    assert 10 < zero_runs < 50  # about half the clips keep exact zeros in their pauses
