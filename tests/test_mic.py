"""The microphone path for real: PulseAudio with a 16 kHz mono null sink, real speech
played into it with ``paplay``, ``jsqa-monitor --device mic`` capturing its monitor."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsqa.audio import write_audio
from jsqa.scorer import DEFAULT_MODEL

from .stream_support import run

MONITOR = [sys.executable, "-m", "jsqa.streaming"]
NULL_SINK = "module-null-sink sink_name=vsink rate=16000 channels=1"


@pytest.fixture(scope="module")
def pulse():
    """A PulseAudio daemon whose default source is the monitor of a 16 kHz mono null sink."""
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"PulseAudio is not installed ({', '.join(missing)} missing): apt-get install pulseaudio pulseaudio-utils")
    started = subprocess.run(["pulseaudio", "--check"]).returncode != 0
    if started:
        subprocess.run(
            ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disallow-exit",
             "--load=module-native-protocol-unix", f"--load={NULL_SINK}"],
            check=True, capture_output=True, timeout=30,
        )
    elif "vsink" not in subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True).stdout:
        subprocess.run(["pactl", "load-module", *NULL_SINK.split()], check=True, capture_output=True)
    subprocess.run(["pactl", "set-default-sink", "vsink"], check=True, capture_output=True)
    subprocess.run(["pactl", "set-default-source", "vsink.monitor"], check=True, capture_output=True)
    yield
    if started:
        subprocess.run(["pulseaudio", "--kill"], capture_output=True)


async def _monitor_while_playing(model: Path, clip: Path) -> list[dict]:
    """Run the monitor on the default mic, play ``clip`` once capture is live, then stop it."""
    proc = await asyncio.create_subprocess_exec(
        *MONITOR, "--device", "mic", "--no-dashboard", "--model", str(model), "--alert-threshold", "1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    events = []
    try:
        # the first window only arrives once capture runs (its first callback can take 2 s)
        while not any(e["type"] == "score" for e in events):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, (await proc.stderr.read()).decode()
            events.append(json.loads(line))
        played = await asyncio.create_subprocess_exec("paplay", str(clip))
        await played.wait()
        await asyncio.sleep(1.0)  # let the last window covering the clip complete
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    events += [json.loads(line) for line in out.decode().splitlines()]
    return events


def _speech_scores(events: list[dict]) -> list[float]:
    return [e["mos"] for e in events if e["type"] == "score" and not e["no_speech"]]


@pytest.fixture(scope="module")
def clean_run(pulse, tmp_path_factory, clean_speech, tiny_onnx_model):
    """6 s of real speech played into the null sink while the monitor captures it; with the
    shipped model when it exists (it can tell clean from noisy), else the tiny test model."""
    model = DEFAULT_MODEL if DEFAULT_MODEL.is_file() else tiny_onnx_model
    clip = tmp_path_factory.mktemp("mic") / "clean.wav"
    write_audio(clip, clean_speech[: 16000 * 6])
    return model, run(_monitor_while_playing(model, clip), timeout=90)


def test_mic_scores_arrive(clean_run):
    _, events = clean_run
    assert events[0]["type"] == "stream_started" and events[0]["source"] == "mic"
    scores = _speech_scores(events)
    assert len(scores) >= 3  # 6 s of speech fills at least three 3 s windows
    assert all(1.0 <= m <= 5.0 for m in scores)
    # the captured level is the played speech's, not silence
    assert max(e["level_dbfs"] for e in events if e["type"] == "score") > -40.0
    assert events[-1]["type"] == "stream_ended" and events[-1]["reason"] == "stopped"


def test_mic_clean_speech_beats_heavy_noise(clean_run, clean_speech, tmp_path):
    model, clean_events = clean_run
    if model != DEFAULT_MODEL:
        pytest.skip(f"needs the trained shipped model; {DEFAULT_MODEL} is not there yet")
    speech = clean_speech[: 16000 * 6]
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32)
    # white noise at 10 dB SNR: heavy, yet the VAD still hears the speech (at 0 dB it does
    # not, and such windows are reported as no_speech instead of scored)
    noise *= np.sqrt(np.mean(speech**2) / np.mean(noise**2)) * 10 ** (-10 / 20)
    noisy = tmp_path / "noisy.wav"
    write_audio(noisy, (speech + noise) / 1.1)
    noisy_scores = _speech_scores(run(_monitor_while_playing(model, noisy), timeout=90))
    assert noisy_scores
    # medians: the windows wholly inside the clip outnumber those straddling its edges
    assert np.median(_speech_scores(clean_events)) > np.median(noisy_scores)
