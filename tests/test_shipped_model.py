"""What the shipped model must get right about clean speech, pauses and severity."""

import numpy as np
import pytest

from jsqa import impairments as imp
from jsqa.audio import load_audio
from jsqa.data import list_audio
from jsqa.noises import NOISE_DBFS, pink
from jsqa.scorer import Scorer


@pytest.fixture(scope="module")
def shipped():
    return Scorer()


@pytest.fixture(scope="module")
def held_out_clean(speech_dir):
    """A LibriSpeech reader: never in any training stage."""
    return load_audio(list_audio(speech_dir / "librispeech_examples")[0])


def test_exact_zero_pauses_are_not_a_defect(shipped, speech_dir):
    """VoIP endpoints send digital zeros between sentences; they must score as room hiss does."""
    utterances = [load_audio(f) for f in list_audio(speech_dir / "cmu_arctic")[:4]]
    gap = np.zeros(int(0.8 * 16000), np.float32)
    zeros = np.concatenate([p for u in utterances for p in (u, gap)])
    pause = np.concatenate([p for u in utterances for p in (np.zeros(u.size, bool), np.ones(gap.size, bool))])
    hiss = pink(zeros.size, np.random.default_rng(0)) * 10 ** ((-60 - NOISE_DBFS) / 20)
    with_hiss = np.where(pause, hiss, zeros).astype(np.float32)
    assert shipped.score(zeros).mos == pytest.approx(shipped.score(with_hiss).mos, abs=0.2)


@pytest.mark.parametrize("transform, values", [
    (lambda v: imp.AddNoise(snr_db=v, noise="pink"), (30, 20, 10, 5, 0, -5)),
    (lambda v: imp.MNRU(q_db=v), (40, 30, 20, 10, 0)),
])
def test_scores_fall_with_severity(shipped, held_out_clean, transform, values):
    # The model's own numbers: the energy VAD calls speech under steady noise at 0 dB SNR
    # "no speech", which is a separate matter from what the model hears.
    scores = [shipped.score(transform(v)(held_out_clean, np.random.default_rng(1))).model_mean for v in values]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
