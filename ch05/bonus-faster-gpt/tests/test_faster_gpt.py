"""The faster GPT computes what chapter 4's GPTModel computes: same logits, same gradients, same greedy tokens."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from faster_gpt import Dropout, FasterGPT, InPlaceCache, from_gpt_model, generate_faster
from previous_chapters import GPT_CONFIG_124M, GPTConfig, GPTModel, generate_greedy, load_gpt2_params

CFG = GPTConfig(vocab_size=500, context_length=32, emb_dim=48, n_heads=4, n_layers=3, drop_rate=0.0, qkv_bias=True,
                tie_embeddings=True)
VARIANTS = [dict(sdpa=True, fused_ops=True), dict(sdpa=False, fused_ops=True), dict(sdpa=True, fused_ops=False),
            dict(sdpa=False, fused_ops=False)]


def chapter_model(cfg=CFG):
    torch.manual_seed(123)
    model = GPTModel(cfg).eval()
    with torch.no_grad():  # non-zero biases and norm shifts, scales away from 1: every parameter matters
        for name, parameter in model.named_parameters():
            if name.endswith(("bias", "shift", "scale")):
                parameter.normal_(mean=1.0 if name.endswith("scale") else 0.0, std=0.2)
    return model


def token_batch(cfg=CFG, batch=2, tokens=None, seed=1):
    return torch.randint(0, cfg.vocab_size, (batch, tokens or cfg.context_length),
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"sdpa={v['sdpa']},fused_ops={v['fused_ops']}")
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_same_logits_as_the_chapter_model(variant, qkv_bias):
    cfg = replace(CFG, qkv_bias=qkv_bias)
    model = chapter_model(cfg)
    faster = from_gpt_model(model, **variant).eval()
    assert sum(p.numel() for p in faster.parameters()) == sum(p.numel() for p in model.parameters())
    ids = token_batch(cfg)
    with torch.no_grad():
        assert (faster(ids) - model(ids)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("sparse_grad", [True, False])
def test_same_gradients_as_the_chapter_model(sparse_grad):
    model = chapter_model().train()
    faster = from_gpt_model(model, sparse_grad=sparse_grad).train()
    ids, targets = token_batch(seed=1), token_batch(seed=2)
    for m in (model, faster):
        F.cross_entropy(m(ids).flatten(0, 1), targets.flatten()).backward()
    block, fast_block = model.trf_blocks[1], faster.trf_blocks[1]
    att = block.att
    expected_qkv = torch.cat([att.W_query.weight.grad, att.W_key.weight.grad, att.W_value.weight.grad])
    assert torch.allclose(fast_block.att.qkv.weight.grad, expected_qkv, atol=1e-5)
    assert torch.allclose(fast_block.fc.weight.grad, block.ff.layers[0].weight.grad, atol=1e-5)
    assert torch.allclose(fast_block.norm1.weight.grad, block.norm1.scale.grad, atol=1e-5)
    # The tied matrix collects the gradients of both its uses, the embedding and the output head, in a dense
    # tensor even when the embedding's part comes as a sparse one (fused AdamW takes dense gradients only).
    assert faster.tok_emb.weight.grad.layout == torch.strided
    # The switch reaches the embedding: its own gradient comes as a sparse tensor exactly when it is on.
    embedding_grad, = torch.autograd.grad(faster.tok_emb(ids).sum(), faster.tok_emb.weight)
    assert embedding_grad.is_sparse == sparse_grad
    assert torch.allclose(faster.tok_emb.weight.grad, model.tok_emb.weight.grad, atol=1e-5)


@pytest.mark.parametrize("fast_dropout", [True, False])
def test_dropout_is_active_in_training_and_off_in_eval(fast_dropout):
    faster = from_gpt_model(chapter_model(replace(CFG, drop_rate=0.5)), fast_dropout=fast_dropout)
    ids = token_batch()
    with torch.no_grad():
        torch.manual_seed(0)
        train_a, train_b = faster.train()(ids), faster(ids)
        eval_a, eval_b = faster.eval()(ids), faster(ids)
    assert not torch.allclose(train_a, train_b)
    assert torch.equal(eval_a, eval_b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_masks_drop_a_fraction_p_and_scale_the_rest(dtype):
    torch.manual_seed(0)
    x = (torch.rand(1_000_000) + 0.5).to(dtype).requires_grad_()
    y = Dropout(0.1).train()(x)
    kept = y != 0
    assert y.dtype == dtype
    # Each random int32 gives the numbers of two neighbouring elements: both halves must keep 1 - p of theirs
    # (450,000 on average, with a standard deviation of 212).
    for half in (kept[0::2], kept[1::2]):
        assert abs(half.sum().item() - 450_000) < 1_500
    scale = 32768 / (32768 - 3277)  # p = 0.1 to the nearest 1/32768
    assert torch.allclose(y[kept].float(), x[kept].float() * scale, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    y.sum().backward()
    assert torch.allclose(x.grad.float(), kept * scale, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_dropout_mask_compares_the_two_halves_of_each_random_int32_with_the_rounded_p():
    """The mask, rebuilt independently from the same random int32s: low 15 bits for one element, bits 16-30 for the
    next; dropped below round(0.3 * 32768) = 9830. With about a million elements some 30 numbers equal 9830 exactly,
    so a > for the >= shows; the odd count needs half an int32 at the end."""
    x = torch.rand(1001, 999) + 0.5
    torch.manual_seed(0)
    y = Dropout(0.3).train()(x)
    torch.manual_seed(0)
    words = torch.empty((x.numel() + 1) // 2, dtype=torch.int32).random_()
    numbers = torch.stack([words & 0x7FFF, (words >> 16) & 0x7FFF], dim=1).flatten()[:x.numel()].view(x.shape)
    assert torch.equal(y != 0, numbers >= 9830)
    assert torch.allclose(y, torch.where(numbers >= 9830, x * 32768 / (32768 - 9830), 0.0))
    assert Dropout(0.3).train()(torch.tensor(2.0)).shape == ()


@pytest.mark.parametrize("p", [1.0, 1e-5])
def test_dropout_with_p_rounding_to_0_or_1_is_nn_dropouts(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_000)  # at p = 1e-5, nn.Dropout drops about 10
    expected = torch.nn.Dropout(p).train()(x)
    torch.manual_seed(0)
    assert torch.equal(Dropout(p).train()(x), expected)


def test_from_gpt_model_keeps_dtype_and_a_model_without_blocks_runs():
    assert from_gpt_model(chapter_model().to(torch.bfloat16)).tok_emb.weight.dtype == torch.bfloat16
    no_blocks = FasterGPT(replace(CFG, n_layers=0)).eval()
    with torch.no_grad():
        assert no_blocks(token_batch()).shape == (2, CFG.context_length, CFG.vocab_size)


def test_training_with_dropout_computes_the_chapter_models_function():
    """In training with dropout on, attention is computed step by step; with a drop probability too small to drop
    anything (1e-9 rounds to 0/32768, so the masks are nn.Dropout's), that path must give the chapter model's
    logits."""
    model = chapter_model(replace(CFG, drop_rate=1e-9))
    faster = from_gpt_model(model).train()
    ids = token_batch()
    with torch.no_grad():
        assert (faster(ids) - model.eval()(ids)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prefill", [1, 5, CFG.context_length])
@pytest.mark.parametrize("sdpa", [True, False])
def test_cached_forward_equals_the_full_pass(prefill, sdpa):
    faster = from_gpt_model(chapter_model(), sdpa=sdpa).eval()
    ids = token_batch()
    cache = InPlaceCache(CFG, batch=2, max_tokens=CFG.context_length)
    with torch.no_grad():
        expected = faster(ids)
        pieces = [faster(ids[:, :prefill], cache)]
        pieces += [faster(ids[:, i:i + 1], cache) for i in range(prefill, CFG.context_length)]
    assert cache.length == CFG.context_length
    # One token at a time sums in another order than the full pass: float32 rounding, at most a few 1e-6 here.
    assert (torch.cat(pieces, dim=1) - expected).abs().max().item() <= 2e-5


def test_generation_gives_the_chapter_models_tokens():
    model = chapter_model()
    prompt = token_batch(tokens=4)
    expected = generate_greedy(model, prompt, max_new_tokens=20, context_length=CFG.context_length)
    assert torch.equal(generate_faster(from_gpt_model(model).eval(), prompt, max_new_tokens=20), expected)


def test_gpt2_small_weights_load_and_match():
    """GPT-2 small's widths, vocabulary and tied head (2 of its 12 blocks, to keep the test quick), weights in
    Hugging Face's layout loaded as in chapter 5."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(GPT2Config(n_positions=128, n_layer=2)).eval()
    cfg = replace(GPT_CONFIG_124M, context_length=128, n_layers=2, drop_rate=0.0, qkv_bias=True, tie_embeddings=True)
    model = load_gpt2_params(GPTModel(cfg), hf_model.state_dict()).eval()
    faster = from_gpt_model(model).eval()
    ids = token_batch(cfg, batch=2, tokens=64)
    with torch.no_grad():
        assert (faster(ids) - model(ids)).abs().max().item() <= 1e-5
        assert (faster(ids) - hf_model(ids).logits).abs().max().item() <= 1e-4
    prompt = ids[:1, :8]
    expected = generate_greedy(model, prompt, max_new_tokens=10, context_length=cfg.context_length)
    assert torch.equal(generate_faster(faster, prompt, max_new_tokens=10), expected)


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        from_gpt_model(GPTModel(replace(CFG, tie_embeddings=False)))
    faster = FasterGPT(CFG).eval()
    with pytest.raises(ValueError, match="context length is 32"):
        faster(token_batch(tokens=CFG.context_length + 1))
    with pytest.raises(ValueError, match=r"exceed the context length 32"):
        generate_faster(faster, token_batch(tokens=30), max_new_tokens=5)
    cache = InPlaceCache(CFG, batch=2, max_tokens=4)
    with torch.no_grad(), pytest.raises(ValueError, match="holds 4 positions; 6 were requested"):
        faster(token_batch(tokens=6), cache)
    cache = InPlaceCache(CFG, batch=2, max_tokens=8)
    with torch.no_grad(), pytest.raises(ValueError, match="batch of 2 sequences; got 1"):
        faster(token_batch(batch=1, tokens=4), cache)
    with pytest.raises(ValueError, match=r"emb_dim \(48\) must be divisible by n_heads \(5\)"):
        FasterGPT(replace(CFG, n_heads=5))
