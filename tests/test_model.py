"""JSQAModel: presets, the log-mel front-end, output range, heads, level and checkpoints."""

import pytest

torch = pytest.importorskip("torch")

from jsqa.model import (
    MEL_HOP,
    N_FFT,
    PRESETS,
    JSQAModel,
    LogMel,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)

WINDOW = 48000


@pytest.fixture(scope="module")
def tiny(speech_windows):
    """A random tiny model whose scores spread over the scale on speech (the head is scaled
    up and centred on these windows), so tests can see differences."""
    torch.manual_seed(0)
    model = JSQAModel("tiny").eval()
    with torch.no_grad():
        model.mos_head[-1].weight.mul_(40.0)
        model.mos_head[-1].bias.sub_(model.mos_head(model.embed(speech_windows)).mean())
    return model


@pytest.fixture(scope="module")
def speech_windows(clean_speech):
    x = torch.from_numpy(clean_speech)
    return torch.stack([x[i * 16000 : i * 16000 + WINDOW] for i in range(4)])


@pytest.mark.parametrize(
    "preset, low, high",
    [("tiny", 10_000, 1_000_000), ("small", 3_000_000, 5_000_000), ("paper", 24_000_000, 28_000_000)],
)
def test_preset_parameter_counts(preset, low, high):
    assert low <= count_parameters(JSQAModel(preset)) <= high


def test_cpu_presets_are_log_mel_and_paper_is_the_waveform_hubert():
    assert PRESETS["tiny"]["frontend"] == PRESETS["small"]["frontend"] == "mel"
    assert PRESETS["paper"]["frontend"] == "waveform"
    assert len(JSQAModel("paper").encoder.hubert.feature_extractor.conv_layers) == 7


def test_log_mel_matches_torch_stft(speech_windows):
    mel = LogMel(32)
    spec = torch.stft(speech_windows, N_FFT, MEL_HOP, window=torch.hann_window(N_FFT), center=False,
                      return_complex=True).abs() ** 2
    ref = torch.log10(torch.clamp(mel.filters @ spec, min=1e-10))
    ref = (torch.maximum(ref, ref.amax(dim=(1, 2), keepdim=True) - 8.0) + 4.0) / 4.0
    torch.testing.assert_close(mel(speech_windows), ref, atol=1e-4, rtol=0)


def test_digital_zeros_are_floored_not_extreme(speech_windows):
    """Exact zeros land on the floor 8 decades below the clip's peak, like very quiet hiss,
    and a chunk of nothing but zeros is finite."""
    x = speech_windows[:1].clone()
    x[:, 16000:32000] = 0.0
    hiss = x.clone()
    hiss[:, 16000:32000] = 1e-7 * torch.randn(16000)
    mel = LogMel(32)
    zeros, quiet = mel(x), mel(hiss)
    floor = (zeros.max() * 4.0 - 4.0 - 8.0 + 4.0) / 4.0
    assert zeros.min() == pytest.approx(float(floor), abs=1e-5) and quiet.min() == pytest.approx(float(floor), abs=1e-5)
    assert torch.isfinite(mel(torch.zeros(1, 16000))).all()


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        JSQAModel("huge")


def test_forward_gives_one_score_per_window_in_range(tiny, speech_windows):
    extremes = torch.stack([torch.zeros(WINDOW), torch.ones(WINDOW), 10 * torch.randn(WINDOW)])
    with torch.no_grad():
        speech_scores = tiny(speech_windows)
        extreme_scores = tiny(extremes)
    assert speech_scores.shape == (4,)
    for scores in (speech_scores, extreme_scores):
        assert torch.isfinite(scores).all()
        assert ((scores >= 1.0) & (scores <= 5.0)).all()
    # Different speech windows get different scores: the output is not a constant.
    assert speech_scores.max() - speech_scores.min() > 1e-3


def test_windows_are_encoded_as_independent_one_second_chunks(tiny, speech_windows):
    """A 3 s window is the mean of its three chunk embeddings: what lets a stream encode
    each hop once."""
    with torch.no_grad():
        whole = tiny(speech_windows)
        chunks = tiny.encode_chunks(speech_windows.reshape(-1, 16000)).reshape(4, 3, -1).mean(dim=1)
        torch.testing.assert_close(tiny.mos_from_embedding(chunks), whole, atol=1e-5, rtol=0)
        changed = speech_windows.clone()
        changed[:, :16000] = 0.0
        assert not torch.allclose(tiny(changed), whole)


def test_attention_pooling_starts_as_the_mean_and_pools_cached_chunks_like_the_window(
    tiny, speech_windows, tmp_path
):
    """A mean-pooled network loads into attention pooling unchanged; once the attention
    has weights, pooling the three cached chunk embeddings is exactly attention over all the
    window's frames, so a stream still encodes each hop once."""
    path = tmp_path / "mean.ckpt"
    save_checkpoint(path, tiny)
    attention, ckpt = load_checkpoint(path, pooling="attention")
    assert attention.pooling == ckpt["config"]["pooling"] == "attention"
    assert attention.chunk_embedding_size == PRESETS["tiny"]["hidden_size"] + 1
    with torch.no_grad():
        torch.testing.assert_close(attention(speech_windows), tiny(speech_windows), atol=1e-5, rtol=0)
        torch.manual_seed(3)
        attention.frame_score.weight.normal_(std=1.0)
        chunks = attention.encode_chunks(speech_windows.reshape(-1, 16000)).reshape(4, 3, -1)
        from_chunks = attention.mos_from_embedding(attention.pool_chunks(chunks))
        frames = attention.encoder(speech_windows.reshape(-1, 16000)).reshape(4, -1, chunks.shape[-1] - 1)
        weights = torch.softmax(attention.frame_score(frames), dim=1)
        over_frames = attention.mos_from_embedding((weights * frames).sum(dim=1))
        whole = attention(speech_windows)
    torch.testing.assert_close(from_chunks, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(over_frames, whole, atol=1e-5, rtol=0)
    assert (whole - tiny(speech_windows)).abs().max() > 1e-3  # the learnt weights matter

    save_checkpoint(path, attention)
    assert load_checkpoint(path)[0].pooling == "attention"
    with pytest.raises(ValueError, match="cannot be turned into mean"):
        load_checkpoint(path, pooling="mean")
    with pytest.raises(ValueError, match="pooling must be one of"):
        JSQAModel({**PRESETS["tiny"], "pooling": "max"})


def test_windows_are_scored_independently_of_the_batch(tiny, speech_windows):
    with torch.no_grad():
        batched = tiny(speech_windows)
        single = torch.cat([tiny(w[None]) for w in speech_windows])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_embed_and_project_shapes_and_norm(tiny, speech_windows):
    with torch.no_grad():
        pooled = tiny.embed(speech_windows)
        projected = tiny.project(speech_windows)
    assert pooled.shape == (4, PRESETS["tiny"]["hidden_size"])
    assert projected.shape == (4, PRESETS["tiny"]["projection_dim"])
    torch.testing.assert_close(projected.norm(dim=-1), torch.ones(4))


def test_mos_head_dropout_is_active_only_in_training(speech_windows):
    torch.manual_seed(1)
    model = JSQAModel("tiny")
    with torch.no_grad():
        model.mos_head[-1].weight.mul_(40.0)
        model.train()
        a, b = model(speech_windows[:1]), model(speech_windows[:1])
        model.eval()
        c, d = model(speech_windows[:1]), model(speech_windows[:1])
    assert not torch.equal(a, b)
    assert torch.equal(c, d)


def test_gradients_reach_the_conv_front_end(speech_windows):
    torch.manual_seed(2)
    model = JSQAModel("tiny").train()
    loss = (model(speech_windows) - 4.0).pow(2).mean() + model.project(speech_windows).sum()
    loss.backward()
    first_conv = model.encoder.stem[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_checkpoint_round_trip(tmp_path, tiny, speech_windows):
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(path, tiny, training={"stage": 2}, metrics={"pearson": 0.5}, step=7)
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["preset"] == "tiny"
    assert ckpt["sample_rate"] == 16000 and ckpt["window_seconds"] == 3.0 and ckpt["hop_seconds"] == 1.0
    assert ckpt["training"] == {"stage": 2} and ckpt["metrics"] == {"pearson": 0.5} and ckpt["step"] == 7
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(speech_windows), tiny(speech_windows))


def test_custom_config_overrides_a_preset():
    model = JSQAModel({"preset": "tiny", "num_hidden_layers": 1})
    assert model.preset == "tiny"
    assert len(model.encoder.body.layers) == 1


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ValueError, match="not a JSQA checkpoint"):
        load_checkpoint(bogus)
