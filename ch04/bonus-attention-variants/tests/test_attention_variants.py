"""Each variant is proven against the chapter's code or an independent reference, and every cache against the
full pass. Tiny models, random weights: the whole file runs in a few seconds."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import benchmark
from attention_variants import (
    REAL_MODELS,
    GroupedQueryAttention,
    KVCache,
    MoEFeedForward,
    MultiHeadLatentAttention,
    VariantConfig,
    VariantGPT,
    cache_shape,
    generate_greedy_cached,
    kv_cache_bytes,
    load_balancing_loss,
)
from previous_chapters import FeedForward, GPTModel, MultiHeadAttention

HERE = Path(__file__).resolve().parents[1]
D, HEADS, TOKENS = 32, 4, 12
TINY = VariantConfig(vocab_size=53, context_length=24, emb_dim=D, n_heads=HEADS, n_layers=2, drop_rate=0.0,
                     qkv_bias=True)
VARIANTS = {
    "multi-head": TINY,
    "grouped-query": replace(TINY, n_kv_groups=2),
    "multi-query": replace(TINY, n_kv_groups=1),
    "latent": replace(TINY, latent_dim=8),
    "sliding window": replace(TINY, window=5),
    "sliding window, grouped-query": replace(TINY, window=3, n_kv_groups=2),
    "mixture of experts": replace(TINY, n_experts=3, top_k=2),
}


def randomize(module, seed=0):
    """Give every parameter random values (biases and norm parameters too), so that no zero hides a mistake."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def chapter_attention(qkv_bias=True):
    return randomize(MultiHeadAttention(D, D, context_length=TOKENS, dropout=0.0, num_heads=HEADS, qkv_bias=qkv_bias))


def inputs(tokens=TOKENS, batch=2, dtype=torch.float32):
    return torch.randn(batch, tokens, D, generator=torch.Generator().manual_seed(1), dtype=dtype)


def weights_of(mha):
    """The chapter's module's parameters, without its causal-mask buffer (the variants need none)."""
    return {name: value for name, value in mha.state_dict().items() if name != "mask"}


def test_gqa_with_one_group_per_head_is_the_chapters_multi_head_attention():
    mha = chapter_attention()
    gqa = GroupedQueryAttention(D, D, dropout=0.0, num_heads=HEADS, num_kv_groups=HEADS, qkv_bias=True).eval()
    gqa.load_state_dict(weights_of(mha))
    x = inputs()
    assert (gqa(x) - mha(x)).abs().max() <= 1e-6


@pytest.mark.parametrize("groups", [1, 2])
def test_gqa_is_multi_head_attention_whose_heads_share_keys_and_values(groups):
    """Multi-query (1 group) and grouped-query attention equal the chapter's attention in which the key and value
    weights of head h are those of key/value head h // (heads / groups). (In float64: the two compute with
    differently shaped matrices, which round differently in float32.)"""
    gqa = randomize(GroupedQueryAttention(D, D, dropout=0.0, num_heads=HEADS, num_kv_groups=groups, qkv_bias=True))
    gqa, mha = gqa.double(), chapter_attention().double()
    head_dim, group_size = D // HEADS, HEADS // groups
    with torch.no_grad():
        for name in ["W_key", "W_value"]:
            small, full = getattr(gqa, name), getattr(mha, name)
            full.weight.copy_(small.weight.view(groups, head_dim, D).repeat_interleave(group_size, 0).reshape(D, D))
            full.bias.copy_(small.bias.view(groups, head_dim).repeat_interleave(group_size, 0).reshape(D))
        for name in ["W_query", "out_proj"]:
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
    x = inputs(dtype=torch.float64)
    assert (gqa(x) - mha(x)).abs().max() <= 1e-6


@pytest.mark.parametrize("window", [TOKENS, TOKENS + 7])
def test_a_window_as_long_as_the_sequence_is_causal_attention(window):
    mha = chapter_attention()
    sliding = GroupedQueryAttention(D, D, dropout=0.0, num_heads=HEADS, num_kv_groups=HEADS, qkv_bias=True,
                                    window=window).eval()
    sliding.load_state_dict(weights_of(mha))
    x = inputs()
    assert (sliding(x) - mha(x)).abs().max() <= 1e-6


@pytest.mark.parametrize("window", [1, 3, 5])
def test_sliding_window_attention_sees_exactly_the_last_window_tokens(window):
    """Token i's output equals the chapter's attention run on the tokens i - window + 1 .. i alone (no positions
    enter the attention itself, so cutting the sequence there is an independent reference; float64 as above)."""
    mha = chapter_attention().double()
    sliding = GroupedQueryAttention(D, D, dropout=0.0, num_heads=HEADS, num_kv_groups=HEADS, qkv_bias=True,
                                    window=window).eval().double()
    sliding.load_state_dict(weights_of(mha))
    x = inputs(dtype=torch.float64)
    expected = torch.stack([mha(x[:, max(0, i - window + 1):i + 1])[:, -1] for i in range(TOKENS)], dim=1)
    assert (sliding(x) - expected).abs().max() <= 1e-6
    assert (sliding(x) - mha(x)).abs().max() > 1e-3  # and it differs from full causal attention


def feed_in_pieces(module, x, pieces):
    """``module``'s output for ``x`` fed in pieces of the given sizes through one cache."""
    cache, outputs, start = module.new_cache(), [], 0
    for size in pieces:
        outputs.append(module(x[:, start:start + size], cache))
        start += size
    return torch.cat(outputs, dim=1), cache


@pytest.mark.parametrize("pieces", [[TOKENS], [1] * TOKENS, [5, 1, 1, 3, 2]])
def test_latent_attention_with_its_latent_cache_equals_the_expanded_computation(pieces):
    mla = randomize(MultiHeadLatentAttention(D, D, dropout=0.0, num_heads=HEADS, latent_dim=8, qkv_bias=True))
    x = inputs()
    absorbed, cache = feed_in_pieces(mla, x, pieces)
    assert (absorbed - mla(x)).abs().max() <= 1e-5
    (latents,) = cache.tensors  # the cache holds one 8-value latent per token, nothing else
    assert latents.shape == (2, TOKENS, 8) and cache.nbytes() == 2 * TOKENS * 8 * 4


@pytest.mark.parametrize("window", [1, 4, TOKENS])
def test_the_sliding_window_cache_keeps_only_the_window(window):
    sliding = randomize(GroupedQueryAttention(D, D, dropout=0.0, num_heads=HEADS, num_kv_groups=2, window=window))
    x = inputs()
    stepwise, cache = feed_in_pieces(sliding, x, [3] + [1] * (TOKENS - 3))
    assert (stepwise - sliding(x)).abs().max() <= 1e-5
    assert cache.length == TOKENS
    assert all(t.shape[-2] == min(window, TOKENS) for t in cache.tensors)


def test_a_mixture_of_one_expert_is_the_chapters_feed_forward():
    dense = randomize(FeedForward(TINY))
    moe = MoEFeedForward(TINY, num_experts=1).eval()
    moe.experts[0].load_state_dict(dense.state_dict())
    x = inputs()
    assert (moe(x) - dense(x)).abs().max() <= 1e-6
    assert moe.aux_loss.item() == pytest.approx(1.0)  # one expert is always perfectly balanced


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_a_mixture_adds_its_top_k_experts_weighted_by_their_probabilities(top_k):
    """Against a dense reference that runs every expert on every token and keeps the top-k of each token."""
    moe = randomize(MoEFeedForward(TINY, num_experts=4, top_k=top_k))
    x = inputs()
    probs = torch.softmax(moe.router(x), dim=-1)  # (batch, tokens, experts)
    every = torch.stack([expert(x) for expert in moe.experts], dim=-2)  # (batch, tokens, experts, emb_dim)
    threshold = probs.topk(top_k, dim=-1).values[..., -1:]
    weights = torch.where(probs >= threshold, probs, torch.zeros_like(probs))
    expected = (weights.unsqueeze(-1) * every).sum(dim=-2)
    assert (moe(x) - expected).abs().max() <= 1e-5


def test_the_load_balancing_loss_is_one_when_balanced_and_grows_with_imbalance():
    uniform = torch.full((8, 4), 0.25)
    assert load_balancing_loss(uniform, torch.arange(8).remainder(4)[:, None]).item() == pytest.approx(1.0)
    # all 8 tokens to expert 0, which has probability 0.7: 4 · (1 · 0.7) = 2.8
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1)
    assert load_balancing_loss(skewed, torch.zeros(8, 1, dtype=torch.long)).item() == pytest.approx(2.8)
    # top-2: slots go half to expert 0, half to expert 1: 4 · (0.5 · 0.7 + 0.5 · 0.1) = 1.6
    chosen = torch.tensor([[0, 1]]).repeat(8, 1)
    assert load_balancing_loss(skewed, chosen).item() == pytest.approx(1.6)


def test_the_load_balancing_loss_trains_the_router_towards_balance():
    torch.manual_seed(0)
    moe = MoEFeedForward(TINY, num_experts=4)
    with torch.no_grad():
        moe.router.weight[0] += 0.2  # a router that sends most tokens to expert 0
    x = torch.randn(64, D) + 0.5
    optimizer = torch.optim.SGD(moe.router.parameters(), lr=0.5)
    moe(x)
    before = moe.aux_loss.item()
    for _ in range(20):
        optimizer.zero_grad()
        moe(x)
        moe.aux_loss.backward()
        optimizer.step()
    moe(x)
    assert before > 1.5 and moe.aux_loss.item() < 1.1


@pytest.mark.parametrize("cfg", [TINY, replace(TINY, ff_hidden_dim=4 * D)], ids=["default", "hidden 4 x emb_dim"])
def test_the_default_configuration_is_the_chapters_gpt(cfg):
    torch.manual_seed(0)
    chapter = randomize(GPTModel(TINY))
    variant = VariantGPT(cfg).eval()
    variant.load_state_dict({name: value for name, value in chapter.state_dict().items() if "mask" not in name})
    ids = torch.randint(TINY.vocab_size, (2, 20))
    assert (variant(ids) - chapter(ids)).abs().max() <= 1e-5


def test_the_feed_forward_hidden_size_is_set_by_the_configuration():
    model = VariantGPT(replace(TINY, ff_hidden_dim=10))
    moe = VariantGPT(replace(TINY, ff_hidden_dim=7, n_experts=3))
    assert all(block.ff.layers[0].weight.shape == (10, D) and block.ff.layers[2].weight.shape == (D, 10)
               for block in model.trf_blocks)
    assert all(expert.layers[0].weight.shape == (7, D) for block in moe.trf_blocks for expert in block.ff.experts)
    ids = torch.randint(TINY.vocab_size, (2, 5))
    assert model(ids).shape == moe(ids).shape == (2, 5, TINY.vocab_size)


def test_the_benchmark_compares_the_variants_at_equal_parameters():
    """Each benchmarked model uses, per token, within 0.5% of the parameters of the chapter's GPT of the same size
    (counted here on the real models; for the mixture of experts the experts a token does not use are left out),
    and differs from it only in its variant and its feed-forward hidden size."""
    target = sum(p.numel() for p in GPTModel(benchmark.SMALL).parameters())
    configs = benchmark.equal_parameter_configs(benchmark.SMALL)
    assert configs.keys() == benchmark.CHANGES.keys()
    assert configs["multi-head (8 key/value heads)"].ff_hidden_dim == 4 * benchmark.SMALL.emb_dim
    for name, cfg in configs.items():
        assert cfg == replace(benchmark.SMALL, **benchmark.CHANGES[name], ff_hidden_dim=cfg.ff_hidden_dim)
        model = VariantGPT(cfg)
        used = sum(p.numel() for p in model.parameters())
        if cfg.n_experts is not None:
            expert = sum(p.numel() for p in model.trf_blocks[0].ff.experts[0].parameters())
            used -= cfg.n_layers * (cfg.n_experts - cfg.top_k) * expert
        assert abs(used - target) <= 0.005 * target, f"{name}: {used:,} parameters used per token, not {target:,}"


@pytest.mark.parametrize("name", VARIANTS)
def test_every_cache_gives_the_full_pass_logits_and_tokens(name):
    cfg = VARIANTS[name]
    model = randomize(VariantGPT(cfg))
    ids = torch.randint(cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    full = model(ids)
    caches = model.new_caches()
    stepwise = torch.cat([model(ids[:, :6], caches)] + [model(ids[:, i:i + 1], caches) for i in range(6, 20)], 1)
    assert (stepwise - full).abs().max() <= 1e-5
    # Generation, with PyTorch's initial weights: the random ones above make almost every token the same, which
    # would hide a wrong token. Each generated token must be the argmax of the full pass over the tokens before it
    # (one pass gives them all, as attention is causal).
    torch.manual_seed(0)
    model = VariantGPT(cfg).eval()
    prompts = torch.randint(cfg.vocab_size, (8, 4), generator=torch.Generator().manual_seed(3))
    generated, _ = generate_greedy_cached(model, prompts, max_new_tokens=cfg.context_length - 4)
    assert len(set(generated[:, 4:].flatten().tolist())) > 10  # varied enough to catch a wrong token
    assert torch.equal(generated[:, 4:], model(generated[:, :-1])[:, 3:].argmax(-1))


@pytest.mark.parametrize("name", VARIANTS)
def test_the_estimator_predicts_the_bytes_the_caches_hold(name):
    cfg = VARIANTS[name]
    model = VariantGPT(cfg).eval()
    ids = torch.randint(cfg.vocab_size, (3, 7))
    _, caches = generate_greedy_cached(model, ids, max_new_tokens=10)
    measured = sum(cache.nbytes() for cache in caches)
    assert caches[0].length == 16  # the last generated token is not fed to the model
    assert measured == kv_cache_bytes(cache_shape(cfg), 16, batch_size=3, bytes_per_value=4)


def test_the_estimator_on_published_configurations():
    models = {m.name: m for m in REAL_MODELS}
    assert kv_cache_bytes(models["Llama 3 8B"], 8192) == 2 * 32 * 8 * 128 * 8192 * 2  # 1 GiB
    gemma = models["Gemma 3 270M"]  # 3 global layers see all tokens, 15 sliding ones at most 512
    assert kv_cache_bytes(gemma, 4096) == 2 * 256 * (3 * 4096 + 15 * 512) * 2
    assert kv_cache_bytes(gemma, 100) == 2 * 256 * 18 * 100 * 2
    deepseek = models["DeepSeek-V3 (671B), MLA"]
    assert kv_cache_bytes(deepseek, 1000, batch_size=2) == 2 * 61 * 576 * 1000 * 2


def test_bad_settings_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="multiple of num_kv_groups"):
        GroupedQueryAttention(D, D, 0.0, num_heads=4, num_kv_groups=3)
    with pytest.raises(ValueError, match="window"):
        GroupedQueryAttention(D, D, 0.0, num_heads=4, num_kv_groups=4, window=0)
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(TINY, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="cannot be combined"):
        VariantGPT(replace(TINY, latent_dim=8, window=4))
    with pytest.raises(ValueError, match="ff_hidden_dim"):
        VariantGPT(replace(TINY, ff_hidden_dim=0))
    model = VariantGPT(TINY)
    caches = model.new_caches()
    model(torch.zeros(1, 20, dtype=torch.long), caches)
    with pytest.raises(ValueError, match="context length is 24"):
        model(torch.zeros(1, 5, dtype=torch.long), caches)


def test_a_cache_without_window_keeps_everything():
    cache = KVCache()
    for _ in range(3):
        cache.extend(torch.ones(1, 2, 4, 8))
    assert cache.length == 12 and cache.tensors[0].shape == (1, 2, 12, 8)


def test_the_benchmark_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "benchmark.py", "--tiny", "--json", str(tmp_path / "rows.json")],
                            cwd=HERE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "load average" in result.stdout and "mixture of experts" in result.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == list(benchmark.CHANGES)
