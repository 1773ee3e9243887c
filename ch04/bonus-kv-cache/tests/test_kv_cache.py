"""Generation with the key/value cache computes exactly what chapter 4's model computes without it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kv_cache import KVCache, forward_with_cache, generate_greedy_cached
from previous_chapters import GPTConfig, GPTModel, generate_greedy

CFG = GPTConfig(vocab_size=500, context_length=24, emb_dim=48, n_heads=4, n_layers=3, drop_rate=0.0, qkv_bias=True)


@pytest.fixture
def model():
    torch.manual_seed(123)
    model = GPTModel(CFG).eval()
    with torch.no_grad():  # non-zero biases and norm parameters, so every term of the computation matters
        for name, parameter in model.named_parameters():
            if name.endswith(("bias", "shift")) or name.endswith("scale"):
                parameter.normal_(mean=1.0 if name.endswith("scale") else 0.0, std=0.2)
    return model


@pytest.mark.parametrize("prefill", [1, 7, CFG.context_length])
def test_cached_logits_match_the_full_forward_pass(model, prefill):
    token_ids = torch.randint(0, CFG.vocab_size, (2, CFG.context_length), generator=torch.Generator().manual_seed(1))
    cache = KVCache(CFG, batch_size=2)
    with torch.no_grad():
        expected = model(token_ids)
        pieces = [forward_with_cache(model, token_ids[:, :prefill], cache)]
        pieces += [forward_with_cache(model, token_ids[:, i:i + 1], cache) for i in range(prefill, CFG.context_length)]
    assert cache.length == CFG.context_length
    assert (torch.cat(pieces, dim=1) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prompt_tokens, new_tokens", [(5, 10), (5, 40), (30, 6)])
def test_cached_generation_gives_the_same_tokens(model, prompt_tokens, new_tokens):
    """Within the context, and beyond it (40 new tokens, a 30-token prompt) where the window slides."""
    prompt = torch.randint(0, CFG.vocab_size, (2, prompt_tokens), generator=torch.Generator().manual_seed(2))
    expected = generate_greedy(model, prompt, new_tokens, CFG.context_length)
    actual = generate_greedy_cached(model, prompt, new_tokens, CFG.context_length)
    assert torch.equal(actual, expected)


def test_shorter_context_window_gives_the_same_tokens(model):
    prompt = torch.randint(0, CFG.vocab_size, (1, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(generate_greedy_cached(model, prompt, 20, context_length=8),
                       generate_greedy(model, prompt, 20, context_length=8))


def test_each_step_after_the_prompt_processes_one_token(model):
    seen = []
    model.tok_emb.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
    generate_greedy_cached(model, torch.zeros(1, 5, dtype=torch.long), 6, CFG.context_length)
    assert seen == [5, 1, 1, 1, 1, 1]


def test_cache_is_allocated_once(model):
    cache = KVCache(CFG, batch_size=1)
    pointers = (cache.keys.data_ptr(), cache.values.data_ptr())
    with torch.no_grad():
        for i in range(3):
            forward_with_cache(model, torch.tensor([[i]]), cache)
    assert (cache.keys.data_ptr(), cache.values.data_ptr()) == pointers
    assert cache.length == 3
    assert cache.keys[:, :, :, 3:].abs().sum() == 0  # nothing written beyond the cached tokens


def test_overflowing_the_cache_is_an_error(model):
    cache = KVCache(CFG, batch_size=1)
    cache.length = CFG.context_length - 1
    with pytest.raises(ValueError, match="23 cached \\+ 2 new tokens exceed the context length 24"):
        forward_with_cache(model, torch.zeros(1, 2, dtype=torch.long), cache)


def test_batch_mismatch_is_an_error(model):
    with pytest.raises(ValueError, match="made for a batch of 1, the input has 3"):
        forward_with_cache(model, torch.zeros(3, 2, dtype=torch.long), KVCache(CFG, batch_size=1))


def test_benchmark_runs_and_prints_its_header_and_ratios_of_medians():
    result = subprocess.run([sys.executable, "benchmark.py", "--tiny", "--new-tokens", "5"],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
                            env=os.environ)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("same tokens as without cache: True") == 3, out
    assert re.search(r"^date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", out, re.M), out
    assert re.search(r"^CPU: .+, \d+ cores, load average [\d.]+ at the start", out, re.M), out
    assert re.search(r"^software: Python [\d.]+, torch \S+ with \d+ threads, transformers \S+$", out, re.M), out
    assert re.search(r"^command: python benchmark.py --tiny --new-tokens 5$", out, re.M), out
    assert "median of 3 rounds" in out, out
    for name in ["chapter 4, no cache", "chapter 4 + KV cache", "transformers generate"]:
        assert re.search(rf"^{re.escape(name)} +[\d.]+ tokens/s +\([\d.]+-[\d.]+\) ", out, re.M), out
    for pair in ["chapter 4, no cache / chapter 4 + KV cache", "chapter 4 + KV cache / transformers generate"]:
        assert re.search(rf"^ratio of median times, {re.escape(pair)}: \d+\.\d\d ", out, re.M), out
