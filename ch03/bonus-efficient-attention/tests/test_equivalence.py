"""Every implementation computes the chapter's MultiHeadAttention: same outputs, same gradients, same errors."""

import pytest
import torch

from efficient_attention import (
    IMPLEMENTATIONS,
    REFERENCE,
    MultiHeadAttention,
    TorchMultiheadAttention,
    convert_chapter_parameters,
    from_chapter,
)

TOLERANCE = dict(atol=1e-5, rtol=1e-5)  # float32
OTHERS = [name for name in IMPLEMENTATIONS if name != REFERENCE]
SQUARE = [name for name in OTHERS if IMPLEMENTATIONS[name] is not TorchMultiheadAttention]  # allow d_in != d_out


def chapter_layer(d_in=12, d_out=12, context_length=10, dropout=0.0, num_heads=3, qkv_bias=False, seed=0):
    torch.manual_seed(seed)
    return MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias)


def inputs(batch, tokens, d_in, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, tokens, d_in, requires_grad=True)


def gradients(layer, x):
    """Run forward and backward on a loss that weights every output differently; return all gradients."""
    out = layer(x)
    torch.manual_seed(2)
    (out * torch.randn(out.shape)).sum().backward()  # not randn_like: it would copy out's memory layout
    return x.grad.clone(), {name: p.grad for name, p in layer.named_parameters()}


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["no-qkv-bias", "qkv-bias"])
@pytest.mark.parametrize("name", OTHERS)
def test_same_output_and_gradients_as_the_chapter_layer(name, qkv_bias):
    reference = chapter_layer(qkv_bias=qkv_bias)
    layer = from_chapter(IMPLEMENTATIONS[name], reference)
    x_ref, x = inputs(2, 10, 12), inputs(2, 10, 12)
    torch.testing.assert_close(layer(x), reference(x_ref), **TOLERANCE)

    x_grad_ref, param_grads_ref = gradients(reference, x_ref)
    x_grad, param_grads = gradients(layer, x)
    torch.testing.assert_close(x_grad, x_grad_ref, **TOLERANCE)
    expected = convert_chapter_parameters(IMPLEMENTATIONS[name], param_grads_ref, reference.num_heads)
    assert param_grads.keys() == expected.keys()
    for param in expected:
        torch.testing.assert_close(param_grads[param], expected[param], **TOLERANCE, msg=param)


@pytest.mark.parametrize("name", OTHERS)
def test_gpt2_small_shapes(name):
    reference = chapter_layer(d_in=768, d_out=768, context_length=1024, num_heads=12)
    layer = from_chapter(IMPLEMENTATIONS[name], reference)
    x = torch.randn(1, 256, 768)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference(x), **TOLERANCE)


@pytest.mark.parametrize("name", SQUARE)
def test_d_in_different_from_d_out_and_sequence_shorter_than_context(name):
    reference = chapter_layer(d_in=5, d_out=8, context_length=16, num_heads=2, qkv_bias=True)
    layer = from_chapter(IMPLEMENTATIONS[name], reference)
    x = torch.randn(3, 7, 5)
    torch.testing.assert_close(layer(x), reference(x), **TOLERANCE)


@pytest.mark.parametrize("name", OTHERS)
def test_output_does_not_depend_on_later_tokens(name):
    layer = from_chapter(IMPLEMENTATIONS[name], chapter_layer())
    x = torch.randn(2, 10, 12)
    changed = x.clone()
    changed[:, 6:] += 5.0
    torch.testing.assert_close(layer(changed)[:, :6], layer(x)[:, :6])
    assert not torch.allclose(layer(changed)[:, 6:], layer(x)[:, 6:])


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_dropout_acts_in_training_only(name):
    layer = from_chapter(IMPLEMENTATIONS[name], chapter_layer(dropout=0.5))
    no_dropout = from_chapter(IMPLEMENTATIONS[name], chapter_layer(dropout=0.0))
    x = torch.randn(2, 10, 12)
    torch.manual_seed(3)
    assert not torch.allclose(layer(x), no_dropout(x))
    layer.eval()
    torch.testing.assert_close(layer(x), no_dropout(x), **TOLERANCE)


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_d_out_must_be_divisible_by_num_heads(name):
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by num_heads \(4\)"):
        IMPLEMENTATIONS[name](10, 10, 8, 0.0, 4)


def test_torch_multihead_attention_needs_equal_in_and_out_sizes():
    with pytest.raises(ValueError, match="d_in == d_out, got d_in=5, d_out=8"):
        TorchMultiheadAttention(5, 8, 8, 0.0, 2)


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_same_number_of_parameters(name, qkv_bias):
    config = dict(d_in=12, d_out=12, context_length=10, dropout=0.0, num_heads=3, qkv_bias=qkv_bias)
    layer, reference = IMPLEMENTATIONS[name](**config), MultiHeadAttention(**config)
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in reference.parameters())

