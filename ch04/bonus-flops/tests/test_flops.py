"""The analytic counts agree with what PyTorch counts and allocates for real models."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flops import forward_flops_per_token, forward_macs, memory_mb, parameter_count
from previous_chapters import GPT2_SIZES, GPTConfig, GPTModel

SMALL = GPTConfig(vocab_size=300, context_length=32, emb_dim=48, n_heads=4, n_layers=3)


@pytest.mark.parametrize("cfg, num_tokens", [
    (SMALL, 32),
    (SMALL, 7),
    (replace(SMALL, qkv_bias=True, tie_embeddings=True), 20),
    (GPTConfig(vocab_size=1000, context_length=64, emb_dim=96, n_heads=6, n_layers=2), 64),
])
def test_matches_torch_flop_counter(cfg, num_tokens):
    torch.manual_seed(123)
    model = GPTModel(cfg).eval()
    token_ids = torch.randint(0, cfg.vocab_size, (1, num_tokens))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(token_ids)
    assert counter.get_total_flops() == 2 * sum(forward_macs(cfg, num_tokens).values())


def test_per_token_flops_of_gpt2_small():
    """The usual estimate: 2 FLOPs per non-embedding parameter and token, plus the attention over the context."""
    cfg = GPT2_SIZES["gpt2-small (124M)"]
    non_embedding = parameter_count(cfg) - (cfg.vocab_size + cfg.context_length) * cfg.emb_dim  # lookups, no matmul
    attention = 2 * cfg.n_layers * 2 * cfg.context_length * cfg.emb_dim
    assert forward_flops_per_token(cfg, cfg.context_length) == pytest.approx(2 * non_embedding + attention, rel=1e-3)


def test_weight_memory_matches_a_real_model():
    model = GPTModel(SMALL)
    for dtype, part in [(torch.float32, "weights float32"), (torch.bfloat16, "weights bfloat16")]:
        n_bytes = sum(p.numel() * p.element_size() for p in model.to(dtype).parameters())
        assert memory_mb(SMALL)[part] == n_bytes / 1024 ** 2


def test_kv_cache_memory():
    keys = torch.zeros(SMALL.n_layers, 1, SMALL.n_heads, SMALL.context_length, SMALL.emb_dim // SMALL.n_heads)
    assert memory_mb(SMALL)["KV cache float32"] == 2 * keys.numel() * keys.element_size() / 1024 ** 2


def test_script_prints_every_size_and_draws_the_plot(tmp_path):
    image = tmp_path / "flops.png"
    result = subprocess.run([sys.executable, "flops.py", "--plot", str(image)], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in GPT2_SIZES)
    assert image.stat().st_size > 10_000
