"""No speech is not bad quality: silence and pure noise get no MOS, with a warning."""

import json

import numpy as np
import soundfile as sf

from jsqa.noises import pink
from jsqa.score_cli import main


def test_silence_and_noise_get_no_mos_while_speech_does(tmp_path, clean_speech, capsys):
    rng = np.random.default_rng(0)
    n = 16000 * 5
    sf.write(tmp_path / "silence.wav", np.zeros(n, np.float32), 16000)
    sf.write(tmp_path / "noise.wav", pink(n, rng), 16000)
    sf.write(tmp_path / "speech.wav", clean_speech[:n], 16000)
    code = main([str(tmp_path / f) for f in ("silence.wav", "noise.wav", "speech.wav")] +
                ["--format", "json", "--per-window"])
    out = capsys.readouterr()
    assert code == 0
    results = {r["file"].rsplit("/", 1)[-1]: r for r in json.loads(out.out)["results"]}
    for name in ("silence.wav", "noise.wav"):
        assert results[name]["mos"] is None
        assert all(w["mos"] is None for w in results[name]["windows"])
        assert f"{name}: no speech found" in out.err
    assert 1.0 <= results["speech.wav"]["mos"] <= 5.0
    assert "speech.wav: no speech" not in out.err


def test_table_and_csv_say_no_speech(tmp_path, capsys):
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(16000 * 4, np.float32), 16000)
    assert main([str(path)]) == 0
    assert "no speech" in capsys.readouterr().out
    assert main([str(path), "--format", "csv"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(",")  # an empty MOS field, not a number
