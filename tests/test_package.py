"""Packaging contracts: the runtime side never needs torch, transformers or scipy."""

import subprocess
import sys

RUNTIME_MODULES = ("jsqa.scorer", "jsqa.score_cli", "jsqa.streaming.engine", "jsqa.streaming.server",
                   "jsqa.streaming.dashboard", "jsqa.streaming.cli")


def test_runtime_imports_leave_torch_transformers_and_scipy_out():
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {RUNTIME_MODULES!r}];"
        "print([m for m in ('torch', 'transformers', 'scipy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scoring_and_monitoring_run_without_scipy(speech_path, tiny_onnx_model):
    """scipy (a third of the install) is a training dependency: with it unimportable, both
    runtime commands still score a file."""
    for module, args in (("jsqa.score_cli", [str(speech_path)]), ("jsqa.streaming.cli", ["--file", str(speech_path)])):
        code = (f"import sys; sys.modules['scipy'] = None; from {module} import main;"
                f"sys.exit(main({[*args, '--model', str(tiny_onnx_model)]!r}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "mos" in done.stdout.lower()


def test_side_folders_install_as_subpackages():
    import jsqa.export
    import jsqa.streaming
    import jsqa.training

    for mod in (jsqa.export, jsqa.streaming, jsqa.training):
        assert mod.__name__.startswith("jsqa.")
