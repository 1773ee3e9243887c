"""The building blocks of chapter 4 against PyTorch's own layers, shapes, parameter counts and generation."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from gpt import (
    GELU,
    GPT2_SIZES,
    GPT_CONFIG_124M,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    generate_greedy,
)

TINY = GPTConfig(vocab_size=97, context_length=8, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.0)


def test_layernorm_matches_torch():
    torch.manual_seed(123)
    x = torch.randn(3, 5, 16) * 4 + 2
    ours = LayerNorm(16)
    reference = nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        for parameter in (ours.scale, ours.shift):
            parameter.normal_()
        reference.weight.copy_(ours.scale)
        reference.bias.copy_(ours.shift)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_layernorm_normalises_each_token():
    torch.manual_seed(123)
    out = LayerNorm(16)(torch.randn(4, 16) * 7 - 3)  # scale 1, shift 0 at initialisation
    torch.testing.assert_close(out.mean(dim=-1), torch.zeros(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.var(dim=-1, unbiased=False), torch.ones(4), rtol=0, atol=1e-4)


def test_layernorm_eps_keeps_constant_input_finite():
    out = LayerNorm(4)(torch.full((2, 4), 3.0))
    assert torch.equal(out, torch.zeros(2, 4))


def test_gelu_matches_torch_tanh_approximation():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(GELU()(x), nn.functional.gelu(x, approximate="tanh"), rtol=0, atol=1e-6)


def test_feedforward_widens_four_times_and_keeps_shape():
    ff = FeedForward(TINY)
    assert ff.layers[0].out_features == 4 * TINY.emb_dim
    assert ff(torch.randn(2, 5, TINY.emb_dim)).shape == (2, 5, TINY.emb_dim)


def test_transformer_block_keeps_shape():
    assert TransformerBlock(TINY)(torch.randn(2, 5, TINY.emb_dim)).shape == (2, 5, TINY.emb_dim)


def test_model_returns_logits_for_every_position():
    torch.manual_seed(123)
    logits = GPTModel(TINY)(torch.randint(0, TINY.vocab_size, (3, TINY.context_length)))
    assert logits.shape == (3, TINY.context_length, TINY.vocab_size)


def test_model_rejects_input_longer_than_context():
    with pytest.raises(ValueError, match="9 tokens; the context length is 8"):
        GPTModel(TINY)(torch.zeros(1, 9, dtype=torch.long))


def expected_parameters(cfg):
    """Parameter count written out from the architecture, independently of the modules."""
    d, ff = cfg.emb_dim, 4 * cfg.emb_dim
    attention = 3 * d * d + (3 * d if cfg.qkv_bias else 0) + d * d + d  # W_query/W_key/W_value, out_proj
    feed_forward = d * ff + ff + ff * d + d
    norms = 2 * 2 * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    embeddings = cfg.vocab_size * d + cfg.context_length * d
    return embeddings + cfg.n_layers * (attention + feed_forward + norms) + 2 * d + head


def count_parameters(cfg):
    with torch.device("meta"):  # shapes only: even GPT-2 XL costs no memory
        model = GPTModel(cfg)
    return sum(p.numel() for p in model.parameters())


def test_published_gpt2_small_counts():
    assert count_parameters(GPT_CONFIG_124M) == 163_009_536
    assert count_parameters(replace(GPT_CONFIG_124M, tie_embeddings=True)) == 124_412_160
    assert count_parameters(replace(GPT_CONFIG_124M, tie_embeddings=True, qkv_bias=True)) == 124_439_808


@pytest.mark.parametrize("name", list(GPT2_SIZES))
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_parameter_counts_match_the_architecture(name, tied, qkv_bias):
    cfg = replace(GPT2_SIZES[name], tie_embeddings=tied, qkv_bias=qkv_bias)
    assert count_parameters(cfg) == expected_parameters(cfg)


def test_tied_head_is_the_token_embedding():
    model = GPTModel(replace(TINY, tie_embeddings=True))
    assert model.out_head.weight is model.tok_emb.weight


class NextIdModel(nn.Module):
    """Predicts (last token + 1) mod vocab at every position and records what it was shown."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.seen = []

    def forward(self, token_ids):
        self.seen.append(token_ids.clone())
        return nn.functional.one_hot((token_ids + 1) % self.vocab_size, self.vocab_size).float()


def test_generate_greedy_appends_argmax_and_crops_context():
    model = NextIdModel(vocab_size=10)
    out = generate_greedy(model, torch.tensor([[7, 8], [1, 2]]), max_new_tokens=4, context_length=3)
    assert out.tolist() == [[7, 8, 9, 0, 1, 2], [1, 2, 3, 4, 5, 6]]
    assert [seen[0].tolist() for seen in model.seen] == [[7, 8], [7, 8, 9], [8, 9, 0], [9, 0, 1]]


def test_generate_greedy_is_deterministic_beyond_the_context():
    torch.manual_seed(123)
    model = GPTModel(replace(TINY, drop_rate=0.5)).eval()  # eval mode switches dropout off
    prompt = torch.randint(0, TINY.vocab_size, (2, 5))
    first = generate_greedy(model, prompt, max_new_tokens=10, context_length=TINY.context_length)
    second = generate_greedy(model, prompt, max_new_tokens=10, context_length=TINY.context_length)
    assert first.shape == (2, 15)
    assert torch.equal(first[:, :5], prompt)
    assert torch.equal(first, second)


def test_script_runs():
    result = subprocess.run([sys.executable, "gpt.py"], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "163,009,536 parameters" in result.stdout
