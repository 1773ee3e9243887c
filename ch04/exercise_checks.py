"""Automatic feedback for the exercises of chapter 4 (used by exercises.ipynb and exercise-solutions.ipynb).

Each check works out the expected result on its own, from the architecture, and raises AssertionError with a
hint when an answer is missing or wrong.
"""

from dataclasses import replace

import torch
import torch.nn as nn

from gpt import GPT2_SIZES, GPT_CONFIG_124M


def block_parameters(cfg):
    """Parameters of one transformer block's feed-forward network and attention module, from the shapes."""
    d, hidden = cfg.emb_dim, 4 * cfg.emb_dim
    feed_forward = (d * hidden + hidden) + (hidden * d + d)  # two linear layers with biases
    attention = 3 * d * d + (3 * d if cfg.qkv_bias else 0) + (d * d + d)  # query/key/value, output projection
    return feed_forward, attention


def gpt2_parameters(cfg):
    """Parameters of a GPT-2 model as OpenAI built it: query/key/value biases and a tied output layer."""
    feed_forward, attention = block_parameters(cfg)
    norms = 2 * 2 * cfg.emb_dim
    embeddings = (cfg.vocab_size + cfg.context_length) * cfg.emb_dim
    return embeddings + cfg.n_layers * (feed_forward + attention + norms) + 2 * cfg.emb_dim


def check_exercise_4_1(ff_params, att_params):
    assert ff_params is not None and att_params is not None, "assign ff_params and att_params first"
    expected_ff, expected_att = block_parameters(GPT_CONFIG_124M)
    assert ff_params == expected_ff, (
        "ff_params is not the number of parameters of one FeedForward module of GPT_CONFIG_124M: "
        "count the elements of every tensor in block.ff.parameters(), weights and biases")
    assert att_params == expected_att, (
        "att_params is not the number of parameters of one MultiHeadAttention module of GPT_CONFIG_124M: "
        "count every tensor in block.att.parameters(); the causal mask is a buffer, not a parameter")
    print(f"Correct: the feed-forward network has {ff_params / att_params:.1f} times as many parameters "
          "as the attention module.")


def check_exercise_4_2(gpt2_sizes):
    assert gpt2_sizes is not None, "assign gpt2_sizes first"
    assert set(gpt2_sizes) == set(GPT2_SIZES), f"gpt2_sizes needs exactly the keys of GPT2_SIZES: {list(GPT2_SIZES)}"
    for name, cfg in GPT2_SIZES.items():
        answer = gpt2_sizes[name]
        assert isinstance(answer, tuple) and len(answer) == 2, f"gpt2_sizes[{name!r}] must be a tuple (parameters, MB)"
        n_params, size_mb = answer
        expected = gpt2_parameters(replace(cfg, qkv_bias=True, tie_embeddings=True))
        assert n_params == expected, (
            f"the parameter count of {name} is off by {n_params - expected:,}: build the model with "
            "qkv_bias=True and tie_embeddings=True, and count a shared tensor once")
        assert abs(size_mb - expected * 2 / 1024 ** 2) < 0.01, (
            f"the size of {name} is wrong: a bfloat16 number takes 2 bytes, and 1 MB is 1024 ** 2 bytes")
    print("Correct: " + ", ".join(f"{name.split()[0]} {n / 1e6:,.0f}M" for name, (n, _) in gpt2_sizes.items()))


def check_exercise_4_3(config_class, model_class):
    assert config_class is not None and model_class is not None, "assign config_class and model_class first"
    rates = {"drop_rate_emb": 0.15, "drop_rate_attn": 0.25, "drop_rate_shortcut": 0.35}
    try:
        cfg = config_class(vocab_size=101, context_length=12, emb_dim=32, n_heads=4, n_layers=3, **rates)
    except TypeError as error:
        raise AssertionError(f"the config class needs the fields {list(rates)} besides GPTConfig's: {error}") from None
    model = model_class(cfg)
    assert len(model.trf_blocks) == cfg.n_layers, "the model must have cfg.n_layers transformer blocks"
    expected = {"drop_emb": rates["drop_rate_emb"]}
    for i in range(cfg.n_layers):
        expected[f"trf_blocks.{i}.att.dropout"] = rates["drop_rate_attn"]
        expected[f"trf_blocks.{i}.drop_shortcut"] = rates["drop_rate_shortcut"]
    found = {name: float(module.p) for name, module in model.named_modules() if isinstance(module, nn.Dropout)}
    assert set(found) == set(expected), (
        f"keep GPTModel's dropout modules, no more and no fewer; expected {sorted(expected)}, found {sorted(found)}")
    for name, p in found.items():
        assert p == expected[name], f"{name} has p={p}: which of the three rates belongs to it?"
    logits = model.eval()(torch.randint(0, cfg.vocab_size, (2, cfg.context_length)))
    assert isinstance(logits, torch.Tensor), f"the model returns a {type(logits).__name__}, not a tensor of logits"
    assert tuple(logits.shape) == (2, cfg.context_length, cfg.vocab_size), \
        f"the model returns logits of shape {tuple(logits.shape)}"
    print("Correct: every dropout module has its own rate.")
