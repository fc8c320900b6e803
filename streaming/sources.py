"""Audio sources for the engine: the microphone, files, and raw audio on stdin.

Each source is an async iterator of 16 kHz float32 mono blocks: it opens its input at
the input's own rate and channel count and converts through a ``Decoder``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .decode import ENCODINGS, Decoder

log = logging.getLogger(__name__)


class SourceError(Exception):
    """An input that cannot be used (an unreadable file, no audio device); the message
    says why, and what to do instead, in one line."""


class NoInputDevice(SourceError):
    """No usable audio input device."""


def _sounddevice():
    """The sounddevice module, or ``NoInputDevice`` when the PortAudio library is missing."""
    try:
        import sounddevice
    except OSError as e:  # sounddevice loads libportaudio when imported
        raise NoInputDevice(
            f"{e}: install it (Debian/Ubuntu: apt install libportaudio2), or use --file, --listen or --demo"
        ) from None
    return sounddevice


class _Pacer:
    """Sleeps so that audio is released no faster than real time."""

    def __init__(self, rate: int):
        self.rate = rate
        self.start = time.monotonic()

    async def wait(self, samples_sent: int) -> None:
        delay = self.start + samples_sent / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def list_devices() -> list[dict]:
    """Every audio device PortAudio sees, with its index."""
    sd = _sounddevice()
    return [dict(device, index=i) for i, device in enumerate(sd.query_devices())]


def describe_devices(devices: list[dict]) -> str:
    if not devices:
        return "PortAudio sees no audio devices at all"
    lines = []
    for d in devices:
        kind = f"{d['max_input_channels']} in, {d['max_output_channels']} out"
        lines.append(f"  [{d['index']}] {d['name']} ({kind}, {d['default_samplerate']:g} Hz)")
    return "\n".join(lines)


def find_input_device(spec: str = "mic") -> dict:
    """The device ``spec`` names: ``mic`` (the default input), an index, or part of a name."""
    sd = _sounddevice()
    devices = list_devices()
    inputs = [d for d in devices if d["max_input_channels"] > 0]
    if not inputs:
        raise NoInputDevice(
            f"no audio input device found (PortAudio sees {len(devices)} devices, none with inputs); "
            "use --file, --listen or --demo instead"
        )
    if spec == "mic":
        default = sd.default.device[0]
        if default is None or default < 0:
            return inputs[0]
        return next((d for d in inputs if d["index"] == default), inputs[0])
    if spec.isdigit():
        match = [d for d in inputs if d["index"] == int(spec)]
    else:
        match = [d for d in inputs if spec.lower() in d["name"].lower()]
    if not match:
        raise NoInputDevice(f"no input device matches {spec!r}; jsqa-monitor --list-devices lists them")
    return match[0]


class MicSource:
    """Captures a device at its native rate; blocks arrive from PortAudio's thread."""

    def __init__(self, device: dict, block_seconds: float = 0.05, max_queued_seconds: float = 10.0):
        self.device = device
        self.rate = int(device["default_samplerate"])
        # devices behind sound servers report up to 32 channels; two is all a voice needs
        self.channels = min(int(device["max_input_channels"]), 2)
        self.block = max(1, int(self.rate * block_seconds))
        self.max_blocks = max(1, int(max_queued_seconds / block_seconds))
        self.overflows = 0
        self.stream_id = "mic"

    async def __aiter__(self):
        sd = _sounddevice()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue(self.max_blocks)
        decoder = Decoder("f32le", self.rate, self.channels, rates=None)

        def put(block: np.ndarray) -> None:
            try:
                queue.put_nowait(block)
            except asyncio.QueueFull:
                self.overflows += 1

        def callback(indata, frames, when, status) -> None:
            if status.input_overflow:
                self.overflows += 1
            loop.call_soon_threadsafe(put, indata.copy())

        try:
            stream = sd.InputStream(
                device=self.device["index"], samplerate=self.rate, channels=self.channels,
                dtype="float32", blocksize=self.block, callback=callback,
            )
        except sd.PortAudioError as e:
            raise NoInputDevice(f"cannot open input device {self.device['name']!r}: {e}") from None
        try:
            with stream:
                while True:
                    yield decoder.convert(await queue.get())
        finally:
            if self.overflows:
                log.warning("%s: %d blocks of audio were lost (the machine fell behind the device)",
                            self.device["name"], self.overflows)


class FileSource:
    """A sound file, paced in real time or read as fast as the engine takes it."""

    def __init__(self, path: str | Path, realtime: bool = True, block_seconds: float = 0.1):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            frames = sf.info(str(self.path)).frames
        except sf.SoundFileError as e:
            reason = (getattr(e, "error_string", "") or str(e)).strip().rstrip(".")
            raise SourceError(f"{self.path}: not a sound file soundfile can read ({reason})") from None
        if frames == 0:
            raise SourceError(f"{self.path}: holds no audio samples")
        self.realtime = realtime
        self.block_seconds = block_seconds if realtime else 1.0
        self.stream_id = self.path.stem

    async def __aiter__(self):
        with sf.SoundFile(self.path) as f:
            decoder = Decoder("f32le", f.samplerate, f.channels, rates=None)
            pacer = _Pacer(f.samplerate)
            sent = 0
            for block in f.blocks(max(1, int(f.samplerate * self.block_seconds)), dtype="float32", always_2d=True):
                if self.realtime:
                    await pacer.wait(sent)
                sent += len(block)
                yield decoder.convert(block)
                await asyncio.sleep(0)
            yield decoder.flush()


class StdinSource:
    """Raw audio on standard input (default 16 kHz 16-bit little-endian mono), for example
    ``ffmpeg -i call.mp3 -f s16le -ar 16000 -ac 1 - | jsqa-monitor --file -``."""

    def __init__(self, encoding: str = "pcm_s16le", rate: int = 16000, channels: int = 1,
                 realtime: bool = False, block_seconds: float = 0.1, stream=None):
        self.decoder = Decoder(encoding, rate, channels, rates=None)
        self.realtime = realtime
        self.block_bytes = max(1, int(rate * block_seconds)) * ENCODINGS[encoding] * channels
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.stream_id = "stdin"

    async def __aiter__(self):
        pacer = _Pacer(self.decoder.rate)
        frame = self.decoder.frame_bytes
        while True:
            data = await asyncio.to_thread(self.stream.read, self.block_bytes)
            if not data:
                break
            usable = len(data) - len(data) % frame  # a torn last sample at EOF is dropped
            if self.realtime:
                await pacer.wait(self.decoder.samples_in)
            yield self.decoder.decode(data[:usable])
        yield self.decoder.flush()


async def pump(engine, stream_id: str, source, source_name: str, lossless: bool) -> None:
    """Feed a source into a new engine stream, ending the stream however the source ends."""
    engine.open_stream(stream_id, source_name, lossless=lossless)
    reason = "end"
    try:
        async for samples in source:
            await engine.push(stream_id, samples)
    except asyncio.CancelledError:
        reason = "stopped"
        raise
    except Exception as e:
        reason = f"error: {e}"
        raise
    finally:
        engine.end_stream(stream_id, reason)
