"""Packaging contracts: the runtime side never needs torch."""

import subprocess
import sys


def test_runtime_imports_leave_torch_out():
    code = (
        "import sys, jsqa, jsqa.streaming, jsqa.audio, jsqa.scorer;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_side_folders_install_as_subpackages():
    import jsqa.export
    import jsqa.streaming
    import jsqa.training

    for mod in (jsqa.export, jsqa.streaming, jsqa.training):
        assert mod.__name__.startswith("jsqa.")
