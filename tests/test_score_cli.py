"""jsqa-score on real speech in several formats and rates, and on unreadable input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from jsqa.score_cli import main

# (file name, sample rate, channels, soundfile subtype)
COPIES = [
    ("tel_8k.wav", 8000, 1, "PCM_16"),
    ("card_44k_stereo.flac", 44100, 2, "PCM_24"),
    ("card_48k_stereo.wav", 48000, 2, "FLOAT"),
    ("voip_16k.ogg", 16000, 1, "VORBIS"),
    ("podcast_44k.mp3", 44100, 1, "MPEG_LAYER_III"),
]


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory, clean_speech):
    folder = tmp_path_factory.mktemp("score_cli")
    x = clean_speech[: 16000 * 6]
    sf.write(folder / "original_16k.flac", x, 16000)
    for name, sr, channels, subtype in COPIES:
        y = soxr.resample(x, 16000, sr) if sr != 16000 else x
        if channels == 2:
            y = np.stack([y, 0.9 * y], axis=1)
        sf.write(folder / name, y, sr, subtype=subtype)
    return folder


def run_json(capsys, *argv):
    code = main([*argv, "--format", "json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_scores_every_format_and_rate(audio_folder, tiny_onnx_model, capsys):
    code, report, err = run_json(capsys, str(audio_folder), "--model", str(tiny_onnx_model))
    assert code == 0 and err == "" and report["errors"] == []
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in report["results"]}
    assert set(by_name) == {"original_16k.flac"} | {name for name, *_ in COPIES}
    for r in by_name.values():
        assert 1.0 <= r["mos"] <= 5.0
        assert r["duration_s"] == pytest.approx(6.0, abs=0.06)
    # Wideband copies at sound-card rates (stereo mixed down) score like the 16 kHz original.
    original = by_name["original_16k.flac"]["mos"]
    for name in ("card_44k_stereo.flac", "card_48k_stereo.wav"):
        assert by_name[name]["mos"] == pytest.approx(original, abs=0.05)


def test_unreadable_file_is_reported_and_the_rest_scored(audio_folder, tiny_onnx_model, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    good = audio_folder / "tel_8k.wav"
    code, report, err = run_json(capsys, str(broken), str(good), "--model", str(tiny_onnx_model))
    assert code == 0
    assert [r["file"] for r in report["results"]] == [str(good)]
    assert [e["file"] for e in report["errors"]] == [str(broken)]
    assert str(broken) in err


def test_nothing_scored_exits_non_zero(tiny_onnx_model, tmp_path, capsys):
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"\x00" * 100)
    code = main([str(broken), str(tmp_path / "missing.wav"), "--model", str(tiny_onnx_model)])
    err = capsys.readouterr().err
    assert code == 1
    assert "nothing could be scored" in err and "no such file or folder" in err


def test_glob_and_per_window_csv(audio_folder, tiny_onnx_model, capsys):
    assert main([str(audio_folder / "*.wav"), "--per-window", "--format", "csv", "--model", str(tiny_onnx_model)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,t_start,t_end,mos"
    rows = [line.split(",") for line in lines[1:]]
    assert {r[0].rsplit("/", 1)[-1] for r in rows} == {"tel_8k.wav", "card_48k_stereo.wav"}
    # 6 s at window 3 s, hop 1 s: windows start at 0, 1, 2, 3 s in each file.
    assert sorted(float(r[1]) for r in rows) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert all(1.0 <= float(r[3]) <= 5.0 for r in rows)


def test_table_output_via_the_console_script(audio_folder, tiny_onnx_model):
    done = subprocess.run(
        [sys.executable, "-m", "jsqa.score_cli", str(audio_folder / "voip_16k.ogg"), "--model", str(tiny_onnx_model)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "voip_16k.ogg" in done.stdout and "MOS" in done.stdout


def test_missing_model_is_a_one_line_error(audio_folder, tmp_path, capsys):
    assert main([str(audio_folder), "--model", str(tmp_path / "none.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert "none.onnx" in err and "not found" in err and "\n" not in err


def test_thread_count_is_checked_by_the_parser(audio_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(audio_folder), "--threads", "-2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "jsqa-score: error: argument --threads: -2 is out of range: use at least 1")


def test_a_file_name_with_escape_sequences_is_shown_not_obeyed(tiny_onnx_model, tmp_path, capsys):
    hostile = tmp_path / "call\x1b]0;owned\x07.wav"
    hostile.write_bytes(b"RIFF not really a wave file")
    assert main([str(hostile), "--model", str(tiny_onnx_model)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "call\\x1b]0;owned\\x07.wav" in err


def test_per_window_table_tells_the_tail_window_apart(clean_speech, tiny_onnx_model, tmp_path, capsys):
    # 4.02 s: windows at 0 and 1 s, and one aligned to the end at 1.02 s.
    path = tmp_path / "tail.flac"
    sf.write(path, clean_speech[: 16000 * 4 + 320], 16000)
    assert main([str(path), "--per-window", "--model", str(tiny_onnx_model)]) == 0
    out = capsys.readouterr().out
    assert "0.00-3.00 s" in out and "1.00-4.00 s" in out and "1.02-4.02 s" in out
