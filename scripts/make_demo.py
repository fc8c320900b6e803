"""Build the bundled demo call, jsqa/assets/demo_call.flac, and its attribution file.

A call in four acts, so the dashboard's scores visibly move: clean speech, the same kind
of speech in cafe noise, then packet loss (bursty, lost packets left silent), then clean
speech again. Only public-domain and permissively licensed recordings from the shared
data pack are used; DEMO_ATTRIBUTION.txt names them and the timeline.

    python scripts/make_demo.py            # reads ../shared/data or $JSQA_DATA
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from jsqa.audio import SAMPLE_RATE, load_audio
from jsqa.data import find_data_root
from jsqa.impairments import AddNoise, Gain, PacketLoss
from jsqa.levels import active_speech_level

ASSETS = Path(__file__).resolve().parent.parent / "jsqa" / "assets"
MAX_BYTES = 1_000_000
SPEECH_LEVEL_DBFS = -26.0  # the usual P.56 active level for telephony test material
GAP_S = 0.3

PS = "speech/pocketsphinx/sense_and_sensibility_01_austen_64kb-{}.flac"
LIBRI = "speech/librispeech_examples/{}.flac"
CAFE = "noise/pst_background_samples/cafe.flac"

# (act, speech files, impairment, longest length in seconds)
ACTS = (
    ("clean", [PS.format("0870"), PS.format("0880"), PS.format("0890")], None, None),
    ("cafe noise, 5 dB SNR", [LIBRI.format("198-209-0000")], "noise", None),
    ("packet loss, 25 % in bursts", [PS.format("0920"), PS.format("0930"), PS.format("0880")], "loss", None),
    ("recovered: clean", [LIBRI.format("5703-47212-0000")], None, 12.0),
)

ATTRIBUTION = """\
JSQA demo call (demo_call.flac): 16 kHz mono FLAC, {duration:.1f} s, built by scripts/make_demo.py
from the JSQA shared data pack. Every source permits redistribution; this file is the
attribution the licences ask for. The demo is a modified work: clips were concatenated,
levelled to {level:.0f} dBFS active speech level (ITU-T P.56), cut, and impaired as below.

Timeline:
{timeline}

Sources:
- "Sense and Sensibility", chapter 1, by Jane Austen, read for LibriVox (public domain
  recording; https://librivox.org), clips 0870, 0880, 0890, 0920, 0930 as shipped in the
  CMU pocketsphinx test data (test/data/librivox, BSD-2-Clause-style repository licence).
- LibriSpeech ASR corpus (V. Panayotov, G. Chen, D. Povey, S. Khudanpur, ICASSP 2015;
  https://www.openslr.org/12), CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/),
  utterances 198-209-0000 (reader Heather Barnett) and 5703-47212-0000 (reader Garth
  Comira; cut to its first 12 s), from LibriVox public-domain recordings, via librosa/data.
- Cafe ambience "cafe-takk-northern-quarter-manchester" by antonybk (freesound 387030),
  CC0 1.0, as a 10 s excerpt in the PySoundTool repository (Aislyn Rose).
"""


def _cut(x: np.ndarray, seconds: float | None) -> np.ndarray:
    if seconds is None or x.size <= seconds * SAMPLE_RATE:
        return x
    x = x[: int(seconds * SAMPLE_RATE)].copy()
    fade = int(0.05 * SAMPLE_RATE)  # no click where the cut falls
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return x


def build(data: Path, seed: int) -> tuple[np.ndarray, list[str]]:
    """The demo audio and one timeline line per act."""
    rng = np.random.default_rng(seed)
    noise = AddNoise(5.0, load_audio(data / CAFE))
    loss = PacketLoss(rate=0.25, burst=3.0, concealment="zero")
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    pieces, timeline, t = [], [], 0.0
    for act, files, impairment, longest in ACTS:
        clips = [load_audio(data / f) for f in files]
        speech = _cut(np.concatenate([c for clip in clips for c in (clip, gap)]), longest)
        speech = Gain(SPEECH_LEVEL_DBFS - active_speech_level(speech))(speech, rng)
        if impairment == "noise":
            speech = noise(speech, rng)
        elif impairment == "loss":
            speech = loss(speech, rng)
        pieces.append(speech)
        end = t + speech.size / SAMPLE_RATE
        timeline.append(f"  {t:5.1f} - {end:5.1f} s  {act}")
        t = end
    return np.concatenate(pieces).astype(np.float32), timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data pack folder (default: $JSQA_DATA or ../shared/data)")
    parser.add_argument("--output", type=Path, default=ASSETS / "demo_call.flac", help="FLAC to write")
    parser.add_argument("--seed", type=int, default=7, help="seed for noise offsets and packet losses")
    args = parser.parse_args()
    try:
        data = args.data or find_data_root()
    except FileNotFoundError as e:
        parser.error(str(e))

    audio, timeline = build(data, args.seed)
    with sf.SoundFile(args.output, "w", SAMPLE_RATE, 1, subtype="PCM_16", format="FLAC") as f:
        f.title = "JSQA demo call"
        f.comment = "See DEMO_ATTRIBUTION.txt: LibriVox (public domain), LibriSpeech (CC BY 4.0), freesound antonybk (CC0)"
        f.write(np.clip(audio, -1.0, 1.0))
    size = args.output.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{args.output} is {size} bytes, over the {MAX_BYTES} byte budget: shorten an act")
    text = ATTRIBUTION.format(
        duration=audio.size / SAMPLE_RATE, level=SPEECH_LEVEL_DBFS, timeline="\n".join(timeline)
    )
    (args.output.parent / "DEMO_ATTRIBUTION.txt").write_text(text)
    print("\n".join(timeline))
    print(f"wrote {args.output} ({size / 1e6:.2f} MB, {audio.size / SAMPLE_RATE:.1f} s)")


if __name__ == "__main__":
    main()
