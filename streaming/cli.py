"""``jsqa-monitor``: live speech quality from a microphone, files, a WebSocket server,
the bundled demo, or a remote server, shown on a dashboard or written as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable

from jsqa.cli_args import positive_float, positive_int, real_number, whole_number
from jsqa.sanitize import printable

from .decode import ENCODINGS, MAX_CHANNELS, MAX_RATE, MIN_RATE, DecodeError
from .engine import Engine
from .remote import RemoteError
from .server import Limits
from .sources import SourceError

EPILOG = """examples:
  jsqa-monitor --demo                           the bundled demo call on the dashboard
  jsqa-monitor                                  the default microphone
  jsqa-monitor --file call.wav --no-dashboard   JSON lines on stdout
  ffmpeg -i call.mp3 -f s16le -ar 16000 -ac 1 - | jsqa-monitor --file -
  jsqa-monitor --listen 0.0.0.0:8765 --token SECRET
  jsqa-monitor --connect ws://host:8765 --token SECRET
"""


SHUTDOWN_DRAIN_S = 10.0  # at shutdown, the longest wait for live streams' last windows


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jsqa-monitor",
        description="Live, reference-free speech quality (MOS 1-5) of a microphone, files or calls.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source (pick one; the default microphone if none)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--device", metavar="mic|NAME|INDEX",
                     help="capture an input device: 'mic' is the default input")
    one.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    one.add_argument("--file", metavar="PATH", help="a sound file, or '-' for raw audio on stdin")
    one.add_argument("--listen", metavar="HOST:PORT",
                     help="serve WebSocket streams, /metrics and /healthz (e.g. 127.0.0.1:8765)")
    one.add_argument("--demo", action="store_true", help="stream the bundled demo call in real time")
    one.add_argument("--connect", metavar="ws://HOST:PORT", help="watch a remote jsqa-monitor server")
    src.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                     help="pace files in real time (default: for --demo and with the dashboard)")
    src.add_argument("--encoding", choices=list(ENCODINGS), default="pcm_s16le",
                     help="encoding of raw audio on stdin (default pcm_s16le)")
    src.add_argument("--rate", type=whole_number(MIN_RATE, MAX_RATE), default=16000,
                     help="sample rate of raw audio on stdin (default 16000)")
    src.add_argument("--channels", type=whole_number(1, MAX_CHANNELS), default=1,
                     help="channels of raw audio on stdin (default 1)")
    src.add_argument("--stream-id", help="name of the local stream (default: from the source)")

    out = p.add_argument_group("output")
    out.add_argument("--no-dashboard", action="store_true",
                     help="print events as JSON lines instead (the default when stdout is not a terminal)")
    out.add_argument("--jsonl", metavar="FILE|-", help="also write events as JSON lines to FILE ('-' = stdout)")

    mdl = p.add_argument_group("model and alerts")
    mdl.add_argument("--model", metavar="FILE", help="ONNX model (default: the shipped jsqa-small.onnx)")
    mdl.add_argument("--hop", type=positive_float, metavar="S",
                     help="seconds between windows (default: the model's, 1 s); 3 scores a third as often")
    mdl.add_argument("--max-batch", type=positive_int, default=32, metavar="N",
                     help="most windows per model call (default 32): large batches pay on a GPU; "
                          "on a CPU, where they save little, small ones return the first scores sooner")
    mdl.add_argument("--alert-threshold", type=real_number(1.0, 5.0), default=3.0, metavar="MOS",
                     help="alert when the smoothed MOS stays below this (default 3.0)")
    mdl.add_argument("--alert-seconds", type=positive_float, default=5.0, metavar="S",
                     help="for this many seconds of audio (default 5)")
    mdl.add_argument("--alert-webhook", metavar="URL", help="POST each alert as JSON to URL")

    srv = p.add_argument_group("server (--listen) and --connect")
    srv.add_argument("--token", help="require this bearer token (also sent by --connect)")
    srv.add_argument("--max-streams", type=positive_int, default=Limits.max_streams,
                     help=f"concurrent streams allowed (default {Limits.max_streams})")
    srv.add_argument("--max-speed", type=positive_float, default=Limits.max_speed,
                     help=f"fastest audio allowed, as a multiple of real time (default {Limits.max_speed:g})")
    srv.add_argument("--idle-timeout", type=positive_float, default=Limits.idle_timeout, metavar="S",
                     help=f"close a stream that sends no audio for S seconds (default {Limits.idle_timeout:g})")
    return p


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        number = int(port)
    except ValueError:
        raise CliError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765") from None
    if not 0 <= number <= 65535:
        raise CliError(f"--listen {text!r}: port must be 0-65535")
    return host.strip("[]") or "127.0.0.1", number


def _load_scorer(path: str | None):
    from jsqa.scorer import ModelError, Scorer

    try:
        return Scorer(path)
    except ModelError as e:
        raise CliError(f"{e} (pass --model FILE; jsqa-export makes one)") from None


async def _until_ended(events, stream_id: str) -> AsyncIterator[dict]:
    """A subscription's events up to and including ``stream_ended`` of ``stream_id``."""
    async for event in events:
        yield event
        if event["type"] == "stream_ended" and event["stream_id"] == stream_id:
            return


def _discard_stdout() -> None:
    """The reader of stdout (``| head``) has gone: later writes, and the flush at exit,
    go to /dev/null instead of raising BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


async def _write_jsonl(events, stream, reader_gone: Callable[[], None]) -> None:
    try:
        async for event in events:
            stream.write(json.dumps(event) + "\n")
            stream.flush()
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: stop, as a command in a pipeline does
        if stream is sys.stdout:
            _discard_stdout()
        reader_gone()
    finally:
        if stream is not sys.stdout:
            stream.close()


class _Outputs:
    """Starts the JSON-lines writers and the webhook; each reads its own subscription.
    ``stop`` is called when a reader of the JSON lines goes away."""

    def __init__(self, engine: Engine, args, dashboard: bool, stop: Callable[[], None]):
        self.tasks: list[asyncio.Task] = []
        self.subs = []
        lines = {"score", "stream_started", "stream_ended", "alert"}
        paths = [] if dashboard or args.jsonl == "-" else ["-"]
        if args.jsonl:
            paths.append(args.jsonl)
        for path in paths:
            try:
                stream = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise CliError(f"cannot write --jsonl {path}: {e.strerror}") from None
            self._start(engine.subscribe(types=lines),
                        lambda events, stream=stream: _write_jsonl(events, stream, stop))
        if args.alert_webhook:
            from .alerts import Webhook

            hook = Webhook(args.alert_webhook)
            self._start(engine.subscribe(types={"alert"}, maxsize=64), hook.run)

    def _start(self, sub, consume) -> None:
        self.subs.append(sub)
        self.tasks.append(asyncio.create_task(consume(sub)))

    async def close(self, timeout: float = 5.0) -> None:
        for sub in self.subs:
            sub.close()
        # let writers finish what is queued; a stuck webhook is abandoned
        _, stuck = await asyncio.wait(self.tasks, timeout=timeout) if self.tasks else ((), ())
        for task in stuck:
            task.cancel()


def _engine(args) -> Engine:
    try:
        return Engine(_load_scorer(args.model), alert_threshold=args.alert_threshold,
                      alert_seconds=args.alert_seconds, hop_seconds=args.hop, max_batch=args.max_batch)
    except ValueError as e:  # a model the engine cannot run (another sample rate)
        raise CliError(f"{args.model or 'the shipped model'}: {e}") from None


def _local_source(args, realtime: bool):
    from .sources import FileSource, MicSource, StdinSource, find_input_device

    if args.demo:
        from .demo import demo_path

        return FileSource(demo_path(), realtime=realtime), "demo"
    if args.file == "-":
        return StdinSource(args.encoding, args.rate, args.channels, realtime=realtime), "stdin"
    if args.file:
        return FileSource(args.file, realtime=realtime), "file"
    return MicSource(find_input_device(args.device or "mic")), "mic"


async def _run_local(args, dashboard: bool) -> None:
    from .sources import pump

    # the demo plays like a call; files are paced only when someone watches the dashboard
    realtime = (dashboard or args.demo) if args.realtime is None else args.realtime
    source, kind = _local_source(args, realtime)
    stream_id = args.stream_id or source.stream_id
    lossless = kind in ("file", "stdin", "demo") and not realtime
    async with _engine(args) as engine:
        view = engine.subscribe() if dashboard else None
        feeding = asyncio.create_task(pump(engine, stream_id, source, kind, lossless))
        # subscribed before the pump's first step opens the stream; a reader gone stops the source
        outputs = _Outputs(engine, args, dashboard, stop=feeding.cancel)
        try:
            if view is not None:
                from .dashboard import run_dashboard

                await run_dashboard(_until_ended(view, stream_id), model_name=engine.model_name, single_stream=True)
                feeding.cancel()  # a quit stops the source; a source that has finished is unaffected
            else:
                # Ctrl-C or SIGTERM stops the source; the stream still ends with its summary
                _on_signals(feeding.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
            await engine.drain()
        finally:
            feeding.cancel()
            await outputs.close()


def _on_signals(callback) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)


async def _run_server(args, dashboard: bool) -> None:
    from .server import serve

    host, port = parse_listen(args.listen)
    limits = Limits(max_streams=args.max_streams, max_speed=args.max_speed, idle_timeout=args.idle_timeout)
    async with _engine(args) as engine:
        try:
            server = serve(engine, host, port, token=args.token, limits=limits)
            bound = await server.__aenter__()
        except OSError as e:
            raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        print(f"jsqa-monitor: listening on ws://{bound[0]}:{bound[1]} (model {engine.model_name})",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        outputs = _Outputs(engine, args, dashboard, stop=stop.set)
        try:
            if dashboard:
                from .dashboard import run_dashboard

                await run_dashboard(engine.subscribe(), model_name=engine.model_name, single_stream=False)
            else:
                _on_signals(stop.set)
                await stop.wait()
        finally:
            # the sockets close first: their streams end, and the summaries reach the outputs
            await server.__aexit__(None, None, None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(engine.drain(), SHUTDOWN_DRAIN_S)
            await outputs.close()


async def _run_connect(args, dashboard: bool) -> None:
    from .remote import RemoteError, subscribe_remote

    try:
        events = subscribe_remote(args.connect, token=args.token)
        if dashboard:
            from .dashboard import run_dashboard

            await run_dashboard(events, model_name=args.connect, single_stream=False)
            return
        async for event in events:
            print(json.dumps(event), flush=True)
    except (RemoteError, ValueError) as e:
        raise CliError(str(e)) from None


def _list_devices() -> int:
    from .sources import describe_devices, list_devices

    devices = list_devices()
    if not any(d["max_input_channels"] > 0 for d in devices):
        print("no audio input device found; devices seen:\n" + describe_devices(devices))
        return 0
    print(describe_devices(devices))
    return 0


def _run(args) -> int:
    if args.list_devices:
        return _list_devices()
    dashboard = not args.no_dashboard and sys.stdout.isatty() and args.jsonl != "-"
    if args.connect:
        run = _run_connect(args, dashboard)
    elif args.listen:
        run = _run_server(args, dashboard)
    else:
        run = _run_local(args, dashboard)
    asyncio.run(run)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # stdout's reader has gone (`--connect ... | head`): nothing is wrong
        _discard_stdout()
        return 0
    except (CliError, SourceError, FileNotFoundError, RemoteError, DecodeError) as e:
        # messages may quote a remote server or a file name: one sanitised line
        print(f"jsqa-monitor: error: {printable(e)}", file=sys.stderr)
        return 1
