"""The models the benchmarks compare, each as ``score(x: 16 kHz float32 array) -> float``.

Every builder takes the thread count so all models run under the same budget. Peers need
``pip install --no-deps speechmos distillmos xls-r-sqa`` and ``pip install -e ".[bench]"``;
a missing one raises ImportError, which the benchmarks report and skip.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from jsqa.scorer import Scorer


def jsqa_onnx(model: Path, threads: int):
    scorer = Scorer(model, providers=["CPUExecutionProvider"], intra_threads=threads, inter_threads=1)
    return lambda x: scorer.score(x).mos


def jsqa_torch(model: Path, checkpoint: Path | None, threads: int):
    import torch

    from jsqa.model import JSQAModel, load_checkpoint

    torch.set_num_threads(threads)
    scorer = Scorer(model, providers=["CPUExecutionProvider"])  # windowing rules and preset
    if checkpoint:
        net, _ = load_checkpoint(checkpoint)
    else:
        net = JSQAModel(scorer.metadata.get("preset", "small")).eval()

    def score(x):
        starts = scorer.window_starts(x.size)
        n = min(scorer.window_samples, x.size)
        windows = torch.from_numpy(np.stack([x[s : s + n] for s in starts]))
        with torch.inference_mode():
            return float(torch.cat([net(b) for b in windows.split(scorer.max_batch)]).mean())

    return score


def dnsmos_scores(threads: int):
    """DNSMOS as ``x -> {"ovrl_mos", "sig_mos", "bak_mos", "p808_mos"}`` (P.835 and P.808 in one run)."""
    import onnxruntime as ort
    from speechmos import dnsmos as dns

    dns.run(np.zeros(16000, dtype=np.float32), 16000)  # builds the global DNSMOS object
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    model = dns.dnsmos
    model.onnx_sess = ort.InferenceSession(model.primary_model_path, options, providers=["CPUExecutionProvider"])
    p808 = Path(model.primary_model_path).parent / "model_v8.onnx"
    model.p808_onnx_sess = ort.InferenceSession(str(p808), options, providers=["CPUExecutionProvider"])
    return lambda x: {k: float(v) for k, v in dns.run(x, 16000).items() if k.endswith("_mos")}


def dnsmos(threads: int):
    """DNSMOS P.835 overall MOS."""
    scores = dnsmos_scores(threads)
    return lambda x: scores(x)["ovrl_mos"]


def distillmos(threads: int):
    import torch

    # distillmos imports torchaudio only to read files; the registry's torchaudio does not
    # load beside CPU torch 2.13, and arrays are passed here anyway.
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import distillmos as dm

    torch.set_num_threads(threads)
    model = dm.ConvTransformerSQAModel().eval()

    def score(x):
        with torch.inference_mode():
            return float(model(torch.from_numpy(x)[None]).squeeze())

    return score

