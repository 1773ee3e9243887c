"""Tests of the chapter's attention classes against independent references and the properties they promise."""

import pytest
import torch
import torch.nn.functional as F

from attention import CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttentionV1, SelfAttentionV2

D_IN, TOKENS = 5, 7


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(3, TOKENS, D_IN)  # (batch, tokens, d_in)


def causal_modules():
    """One instance of each causal class, output size 6, dropout off."""
    torch.manual_seed(1)
    return {
        "CausalAttention": CausalAttention(D_IN, 6, TOKENS, dropout=0.0),
        "MultiHeadAttentionWrapper": MultiHeadAttentionWrapper(D_IN, 3, TOKENS, dropout=0.0, num_heads=2),
        "MultiHeadAttention": MultiHeadAttention(D_IN, 6, TOKENS, dropout=0.0, num_heads=3, qkv_bias=True),
    }


def renormalised_causal_attention(x, W_query, W_key, W_value):
    """Reference: full softmax, zero the future, divide each row by its new sum (section 3.4.1)."""
    queries, keys, values = W_query(x), W_key(x), W_value(x)
    weights = torch.softmax(queries @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5, dim=-1)
    weights = weights * torch.tril(torch.ones(x.shape[1], x.shape[1]))
    return weights / weights.sum(dim=-1, keepdim=True) @ values


def test_v1_and_v2_agree_after_weight_transfer(x):
    torch.manual_seed(2)
    v1, v2 = SelfAttentionV1(D_IN, 4), SelfAttentionV2(D_IN, 4)
    assert not torch.allclose(v1(x[0]), v2(x[0]))
    with torch.no_grad():
        for name in ["W_query", "W_key", "W_value"]:
            getattr(v1, name).copy_(getattr(v2, name).weight.T)
    torch.testing.assert_close(v1(x[0]), v2(x[0]))


def test_self_attention_matches_pytorch_scaled_dot_product(x):
    torch.manual_seed(3)
    sa = SelfAttentionV2(D_IN, 4, qkv_bias=True)
    expected = F.scaled_dot_product_attention(sa.W_query(x[0]), sa.W_key(x[0]), sa.W_value(x[0]))
    torch.testing.assert_close(sa(x[0]), expected)


@pytest.mark.parametrize("name", causal_modules())
def test_output_does_not_depend_on_later_tokens(name, x):
    module = causal_modules()[name]
    t = 3
    changed = x.clone()
    changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:]) * 10
    before, after = module(x), module(changed)
    torch.testing.assert_close(after[:, :t + 1], before[:, :t + 1])
    assert not torch.allclose(after[:, t + 1:], before[:, t + 1:]), "later positions must see the change"


@pytest.mark.parametrize("name", causal_modules())
def test_output_depends_on_earlier_tokens(name, x):
    module = causal_modules()[name]
    changed = x.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(module(changed)[:, -1], module(x)[:, -1])


def test_minus_infinity_masking_equals_mask_and_renormalise(x):
    torch.manual_seed(4)
    ca = CausalAttention(D_IN, 4, TOKENS, dropout=0.0, qkv_bias=True)
    torch.testing.assert_close(ca(x), renormalised_causal_attention(x, ca.W_query, ca.W_key, ca.W_value))


def test_attention_weights_are_causal_and_rows_sum_to_one(x):
    """With one-hot inputs and identity value projection the output *is* the weight matrix."""
    torch.manual_seed(5)
    ca = CausalAttention(TOKENS, TOKENS, TOKENS, dropout=0.0)
    with torch.no_grad():
        ca.W_query.weight.copy_(torch.randn(TOKENS, TOKENS))
        ca.W_value.weight.copy_(torch.eye(TOKENS))
    weights = ca(torch.eye(TOKENS).unsqueeze(0))[0]  # (tokens, tokens)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(TOKENS))
    future = torch.ones(TOKENS, TOKENS).triu(diagonal=1).bool()
    assert torch.all(weights[future] == 0)
    assert torch.all(weights[~future] > 0)


def test_sequences_shorter_than_the_context_use_a_slice_of_the_mask(x):
    torch.manual_seed(6)
    short = MultiHeadAttention(D_IN, 4, context_length=TOKENS, dropout=0.0, num_heads=2)
    long = MultiHeadAttention(D_IN, 4, context_length=4 * TOKENS, dropout=0.0, num_heads=2)
    long.load_state_dict({**short.state_dict(), "mask": long.mask})
    torch.testing.assert_close(long(x[:, :4]), short(x[:, :4]))
    torch.testing.assert_close(long(x), short(x))


def test_dropout_is_active_in_training_and_off_in_eval(x):
    torch.manual_seed(7)
    mha = MultiHeadAttention(D_IN, 4, TOKENS, dropout=0.5, num_heads=2)
    no_dropout = MultiHeadAttention(D_IN, 4, TOKENS, dropout=0.0, num_heads=2)
    no_dropout.load_state_dict(mha.state_dict())
    assert not torch.allclose(mha(x), no_dropout(x))
    mha.eval()
    torch.testing.assert_close(mha(x), no_dropout(x))


def test_wrapper_concatenates_heads(x):
    torch.manual_seed(8)
    wrapper = MultiHeadAttentionWrapper(D_IN, 3, TOKENS, dropout=0.0, num_heads=4)
    out = wrapper(x)
    assert out.shape == (3, TOKENS, 4 * 3)
    torch.testing.assert_close(out[..., 6:9], wrapper.heads[2](x))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_multi_head_attention_equals_wrapper_with_stacked_heads(x, qkv_bias):
    torch.manual_seed(9)
    num_heads, head_dim = 3, 4
    wrapper = MultiHeadAttentionWrapper(D_IN, head_dim, TOKENS, 0.0, num_heads, qkv_bias=qkv_bias)
    mha = MultiHeadAttention(D_IN, num_heads * head_dim, TOKENS, 0.0, num_heads, qkv_bias=qkv_bias)
    assert not torch.allclose(mha(x), wrapper(x))
    with torch.no_grad():
        for name in ["W_query", "W_key", "W_value"]:
            for part in (["weight", "bias"] if qkv_bias else ["weight"]):
                stacked = torch.cat([getattr(getattr(head, name), part) for head in wrapper.heads])
                getattr(getattr(mha, name), part).copy_(stacked)
        mha.out_proj.weight.copy_(torch.eye(num_heads * head_dim))
        mha.out_proj.bias.zero_()
    torch.testing.assert_close(mha(x), wrapper(x))


def test_multi_head_attention_matches_pytorch_multihead_attention():
    """An independent reference: torch.nn.MultiheadAttention with the same weights and a causal mask."""
    torch.manual_seed(10)
    d = 6
    x = torch.randn(3, TOKENS, d)
    mha = MultiHeadAttention(d, d, TOKENS, 0.0, num_heads=3, qkv_bias=True)
    reference = torch.nn.MultiheadAttention(d, num_heads=3, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([mha.W_query.weight, mha.W_key.weight, mha.W_value.weight]))
        reference.in_proj_bias.copy_(torch.cat([mha.W_query.bias, mha.W_key.bias, mha.W_value.bias]))
        reference.out_proj.load_state_dict(mha.out_proj.state_dict())
    expected, _ = reference(x, x, x, attn_mask=mha.mask, need_weights=False)
    torch.testing.assert_close(mha(x), expected)


def test_d_out_must_be_divisible_by_num_heads():
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by num_heads \(4\)"):
        MultiHeadAttention(D_IN, 10, TOKENS, 0.0, num_heads=4)


@pytest.mark.parametrize("make", [lambda: CausalAttention(D_IN, 4, TOKENS, 0.0),
                                  lambda: MultiHeadAttention(D_IN, 4, TOKENS, 0.0, num_heads=2)],
                         ids=["CausalAttention", "MultiHeadAttention"])
def test_mask_is_a_buffer_saved_and_moved_with_the_module(make):
    module = make()
    assert "mask" in module.state_dict()
    assert "mask" not in dict(module.named_parameters())
    assert torch.equal(module.state_dict()["mask"], torch.ones(TOKENS, TOKENS).triu(diagonal=1).bool())
    module.to("meta")
    assert module.mask.device.type == "meta"


def test_gpt2_sized_multi_head_attention_parameter_count():
    d, heads = 768, 12
    mha = MultiHeadAttention(d, d, context_length=1024, dropout=0.0, num_heads=heads)
    assert sum(p.numel() for p in mha.parameters()) == 3 * d * d + d * d + d == 2_360_064
    assert mha.head_dim == 64
    assert mha.mask.shape == (1024, 1024)
