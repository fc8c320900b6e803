"""A real terminal: tmux runs ``jsqa-monitor --demo`` and ``--connect``; the screen shows
scores, ``q`` quits with exit code 0 and the terminal is restored."""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from jsqa.streaming.dashboard import acr_category

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

TOKEN = "tmux-test-token"
# The SGR foreground code tmux reports for each ACR category's colour.
CATEGORY_SGR = {"excellent": "92", "good": "32", "fair": "33", "poor": "38;5;208", "bad": "31"}


def monitor_command() -> str:
    beside_python = Path(sys.executable).parent / "jsqa-monitor"
    found = str(beside_python) if beside_python.exists() else shutil.which("jsqa-monitor")
    if found is None:
        pytest.skip("the jsqa-monitor command is not installed (pip install -e .)")
    return found


def clean_env() -> dict[str, str]:
    # COLUMNS/LINES from the test runner would override the tmux window size
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}


class Terminal:
    """One tmux server of its own running one command in a 120x40 window."""

    def __init__(self, tmp_path: Path):
        self.socket = f"jsqa-test-{os.getpid()}-{tmp_path.name}"
        self.rc_file = tmp_path / "rc"
        self.stty_file = tmp_path / "stty"

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, env=clean_env(), check=True)

    def start(self, argv: list[str]) -> None:
        # After the program: its exit code, the terminal modes it left behind, and a pause
        # that keeps the pane alive for the assertions.
        script = (f"{shlex.join(argv)}; echo $? > {shlex.quote(str(self.rc_file))}; "
                  f"stty -a > {shlex.quote(str(self.stty_file))}; sleep 120")
        self.tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "jsqa", script)

    def screen(self, colours: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if colours else []), "-t", "jsqa").stdout

    def wait_for(self, pattern: re.Pattern | str, timeout: float = 60.0) -> str:
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if pattern.search(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{pattern.pattern!r} never appeared; the screen:\n{self.screen()}")

    def press(self, key: str) -> None:
        self.tmux("send-keys", "-t", "jsqa", key)

    def exit_code(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rc_file.exists() and self.rc_file.read_text().strip():
                return int(self.rc_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the program did not exit; the screen:\n{self.screen()}")

    def stty(self) -> str:
        deadline = time.monotonic() + 10
        while not (self.stty_file.exists() and self.stty_file.read_text()):
            assert time.monotonic() < deadline, "stty never ran"
            time.sleep(0.1)
        return self.stty_file.read_text()

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def terminal(tmp_path):
    term = Terminal(tmp_path)
    yield term
    term.close()


def assert_terminal_restored(term: Terminal) -> None:
    modes = term.stty().split()
    assert "icanon" in modes and "echo" in modes  # cbreak mode was undone


@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_demo_shows_the_call_and_quits_cleanly(terminal, tiny_onnx_model, quit_key):
    terminal.start([monitor_command(), "--demo", "--model", str(tiny_onnx_model)])
    screen = terminal.wait_for(r"MOS [1-5]\.\d\d")
    assert "demo_call" in screen and "model jsqa-tiny" in screen
    assert "last 2 min" in screen and "level" in screen and "speech" in screen
    coloured = re.search(r"MOS (?:\x1b\[[0-9;]*m)*?\x1b\[([0-9;]+)m(?:\x1b\[49m)?([1-5]\.\d\d)",
                         terminal.screen(colours=True))
    assert coloured is not None
    sgr, mos = coloured.groups()
    expected = CATEGORY_SGR[acr_category(float(mos))[0]]  # coloured by its ACR category
    assert sgr == expected or sgr.endswith(";" + expected)  # bold may share the sequence
    terminal.press(quit_key)
    assert terminal.exit_code() == 0
    assert_terminal_restored(terminal)


def _start_server(model: Path) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen(
        [monitor_command(), "--listen", "127.0.0.1:0", "--token", TOKEN, "--model", str(model),
         "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stderr], [], [], 0.5)
        line = server.stderr.readline() if ready else ""
        found = re.search(r"listening on ws://[\d.]+:(\d+)", line)
        if found:
            return server, int(found.group(1))
        if server.poll() is not None:
            break
    server.kill()
    raise AssertionError(f"the server did not start: {server.stderr.read()}")


def _feed(url: str, audio: np.ndarray, stop: threading.Event) -> None:
    """Stream ``audio`` over and over, in real time, until ``stop`` or the server goes away."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    chunk = 16000 * 2 // 4  # a quarter of a second
    try:
        with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_queue=None) as ws:
            while not stop.is_set():
                for i in range(0, len(pcm), chunk):
                    if stop.is_set():
                        return
                    ws.send(pcm[i : i + chunk])
                    time.sleep(0.25)
    except (ConnectionClosed, OSError):
        return


def test_connect_shows_a_remote_stream_says_when_the_server_goes_and_quits_on_q(
    terminal, tiny_onnx_model, clean_speech
):
    server, port = _start_server(tiny_onnx_model)
    stop = threading.Event()
    url = f"ws://127.0.0.1:{port}/v1/stream?stream_id=call-tmux&rate=16000&encoding=pcm_s16le"
    feeder = threading.Thread(target=_feed, args=(url, clean_speech, stop), daemon=True)
    feeder.start()
    try:
        terminal.start([monitor_command(), "--connect", f"ws://127.0.0.1:{port}", "--token", TOKEN])
        screen = terminal.wait_for(r"call-tmux +[1-5]\.\d\d")
        assert "1 active stream " in screen and "connected" in screen
        assert "model jsqa-tiny" in screen  # from the server's stats events
        server.terminate()
        server.wait(timeout=20)
        terminal.wait_for(r"reconnecting .*retry in")
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
        feeder.join(timeout=5)
    terminal.press("q")
    assert terminal.exit_code() == 0
    assert_terminal_restored(terminal)
