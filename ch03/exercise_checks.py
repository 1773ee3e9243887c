"""Automatic feedback for the chapter 3 exercises (called from the `# CHECK` cells of exercises.ipynb).

Each check works out the expected result itself and raises AssertionError with a hint when an answer is wrong
or still missing.
"""

import torch

from attention import MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttentionV2


def _require(answer, name):
    assert answer is not None, f"`{name}` is still None: replace the placeholder with your answer"


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def check_exercise_3_1(sa_v2, sa_v1, inputs):
    """sa_v2 must be a SelfAttentionV2 that computes exactly what the given SelfAttentionV1 computes."""
    _require(sa_v2, "sa_v2")
    assert isinstance(sa_v2, SelfAttentionV2), f"`sa_v2` should be a SelfAttentionV2, not {type(sa_v2).__name__}"
    for name in ["W_query", "W_key", "W_value"]:
        layer, matrix = getattr(sa_v2, name), getattr(sa_v1, name)
        assert layer.bias is None, f"sa_v2.{name} has a bias, but SelfAttentionV1 has none: use qkv_bias=False"
        assert layer.weight.shape == matrix.T.shape, \
            (f"sa_v2.{name}.weight has shape {tuple(layer.weight.shape)}, but nn.Linear stores a (d_out, d_in) "
             f"matrix: with sa_v1's d_in and d_out that is {tuple(matrix.T.shape)}")
        if torch.allclose(layer.weight.flatten(), matrix.flatten()) and not torch.allclose(layer.weight, matrix.T):
            raise AssertionError(f"sa_v2.{name} holds sa_v1's numbers in the wrong arrangement: nn.Linear stores "
                                 "(d_out, d_in) and computes x @ weight.T")
    assert torch.allclose(sa_v2(inputs), sa_v1(inputs), atol=1e-6), \
        "the two modules still give different outputs: copy all three matrices, each transposed"
    print("Correct: SelfAttentionV2 now reproduces SelfAttentionV1 exactly.")


def check_exercise_3_2(mha_2d, batch):
    """mha_2d must be a two-head MultiHeadAttentionWrapper whose context vectors have 2 dimensions."""
    _require(mha_2d, "mha_2d")
    assert isinstance(mha_2d, MultiHeadAttentionWrapper), \
        f"`mha_2d` should be a MultiHeadAttentionWrapper, not {type(mha_2d).__name__}"
    assert len(mha_2d.heads) == 2, f"use two heads (you have {len(mha_2d.heads)})"
    d_in, num_tokens = batch.shape[-1], batch.shape[1]
    assert mha_2d.heads[0].W_query.in_features == d_in, f"the inputs have {d_in} features: set d_in accordingly"
    assert mha_2d.heads[0].mask.shape == (num_tokens, num_tokens), \
        f"the batch has {num_tokens} tokens: use context_length={num_tokens}"
    assert mha_2d.heads[0].dropout.p == 0.0, \
        f"the task asks for no dropout, but the heads drop attention weights with p={mha_2d.heads[0].dropout.p}"
    out = mha_2d(batch)
    expected = (*batch.shape[:2], 2)
    assert out.shape == expected, \
        f"output shape is {tuple(out.shape)}, expected {expected}: the heads' outputs are concatenated, so " \
        "what must each head's d_out be?"
    print(f"Correct: two heads of size {mha_2d.heads[0].W_query.out_features} give an output of shape {expected}.")


def check_exercise_3_3(gpt2_attention, gpt2_attention_params):
    """A GPT-2-small attention layer (768 dims, 12 heads, 1024 tokens, no Q/K/V bias) and its parameter count."""
    _require(gpt2_attention, "gpt2_attention")
    _require(gpt2_attention_params, "gpt2_attention_params")
    assert isinstance(gpt2_attention, MultiHeadAttention), \
        f"`gpt2_attention` should be a MultiHeadAttention, not {type(gpt2_attention).__name__}"
    assert gpt2_attention.W_query.in_features == 768 and gpt2_attention.W_query.out_features == 768, \
        "GPT-2 small has 768-dimensional embeddings, in and out"
    assert gpt2_attention.num_heads == 12, f"GPT-2 small has 12 heads (you have {gpt2_attention.num_heads})"
    assert gpt2_attention.mask.shape == (1024, 1024), "GPT-2 handles a context of 1024 tokens"
    assert gpt2_attention.W_query.bias is None, "this exercise asks for query/key/value layers without bias"
    assert gpt2_attention.dropout.p == 0.1, \
        f"GPT-2 small drops attention weights with p=0.1 during training (your layer uses {gpt2_attention.dropout.p})"
    d = 768
    expected = 3 * d * d + d * d + d  # Q, K, V weights + output projection weights and bias
    assert gpt2_attention_params != expected + gpt2_attention.mask.numel(), \
        "you counted the causal mask too: it is a buffer, not a parameter; count only what parameters() yields"
    assert gpt2_attention_params == expected, \
        f"{gpt2_attention_params!r} is not the number of trainable numbers in the module: sum p.numel() over " \
        "its parameters(), or count the four projection matrices and the output projection's bias"
    print(f"Correct: a GPT-2-sized attention layer has {expected:,} parameters.")


def check_exercise_3_4(extra_params_with_qkv_bias):
    """How many parameters qkv_bias=True adds to the GPT-2-sized layer."""
    _require(extra_params_with_qkv_bias, "extra_params_with_qkv_bias")
    layer = dict(d_in=768, d_out=768, context_length=1024, dropout=0.0, num_heads=12)
    expected = _num_params(MultiHeadAttention(**layer, qkv_bias=True)) - _num_params(MultiHeadAttention(**layer))
    assert extra_params_with_qkv_bias == expected, \
        f"{extra_params_with_qkv_bias!r} is not right: which layers get a bias, and how long is each bias vector?"
    print(f"Correct: the query, key and value biases add {expected:,} parameters "
          f"({expected / _num_params(MultiHeadAttention(**layer)):.2%} of the layer).")


def check_exercise_3_5(sliding_window_mask):
    """sliding_window_mask(num_tokens, window): True where token i must NOT see token j."""
    _require(sliding_window_mask, "sliding_window_mask")
    for num_tokens, window in [(6, 2), (5, 1), (7, 3), (4, 10)]:
        mask = sliding_window_mask(num_tokens, window)
        assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool, \
            "return a boolean tensor (True = hidden), like the causal mask in section 3.4.2"
        assert mask.shape == (num_tokens, num_tokens), \
            f"for {num_tokens} tokens the mask must have shape ({num_tokens}, {num_tokens}), not {tuple(mask.shape)}"
        for i in range(num_tokens):
            visible = [j for j in range(num_tokens) if not mask[i, j]]
            expected = list(range(max(0, i - window + 1), i + 1))
            assert visible == expected, \
                f"with window={window}, token {i} should see tokens {expected}, but your mask lets it see {visible}"
    print("Correct: each token sees itself and the window - 1 tokens before it, nothing later.")
