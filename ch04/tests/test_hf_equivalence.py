"""GPTModel is GPT-2: the same weights in Hugging Face's GPT2LMHeadModel and in the course's model give the same logits.

The reference is built from a GPT2Config (nothing is downloaded) and every tensor, biases and norms included,
is set to random values, so a mistake anywhere in the mapping or in the model changes the logits.
"""

from dataclasses import replace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt import GPTConfig, GPTModel, load_gpt2_params

NORM_WEIGHTS = ("ln_1.weight", "ln_2.weight", "ln_f.weight")

CONFIGS = {  # name: (GPTConfig, tokens in the test batch)
    "1 layer, 2 heads, qkv bias, tied": GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=2,
                                                  n_layers=1, qkv_bias=True, tie_embeddings=True),
    "3 layers, 4 heads, no bias, tied": GPTConfig(vocab_size=1000, context_length=64, emb_dim=96, n_heads=4,
                                                  n_layers=3, qkv_bias=False, tie_embeddings=True),
    "GPT-2 vocabulary, 8 heads, bias, untied": GPTConfig(vocab_size=50257, context_length=32, emb_dim=64, n_heads=8,
                                                         n_layers=2, qkv_bias=True, tie_embeddings=False),
    "4 layers, 3 heads, no bias, untied": GPTConfig(vocab_size=500, context_length=20, emb_dim=48, n_heads=3,
                                                    n_layers=4, qkv_bias=False, tie_embeddings=False),
}


def random_hf_gpt2(cfg, seed=123):
    """A GPT2LMHeadModel shaped like ``cfg``, dropout off, every tensor random (zero c_attn bias if cfg has none)."""
    hf_config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                           n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(hf_config).eval()
    assert (model.lm_head.weight is model.transformer.wte.weight) == cfg.tie_embeddings
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.normal_(std=0.1, generator=generator)
            if name.endswith(NORM_WEIGHTS):
                tensor.add_(1.0)
            if name.endswith("attn.c_attn.bias") and not cfg.qkv_bias:  # HF always has this bias
                tensor.zero_()
    return model


def course_model(cfg):
    return GPTModel(replace(cfg, drop_rate=0.0)).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(name):
    cfg = CONFIGS[name]
    reference = random_hf_gpt2(cfg)
    model = load_gpt2_params(course_model(cfg), reference.state_dict())
    token_ids = torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(token_ids).logits
        actual = model(token_ids)
    assert expected.abs().max() > 1.0  # logits far from zero: the comparison below is not trivially met
    assert (actual - expected).abs().max().item() <= 1e-5


def test_accepts_numpy_arrays_without_prefix():
    cfg = CONFIGS["1 layer, 2 heads, qkv bias, tied"]
    state = random_hf_gpt2(cfg).state_dict()
    from_torch = load_gpt2_params(course_model(cfg), state)
    from_numpy = load_gpt2_params(course_model(cfg), {name.removeprefix("transformer."): tensor.numpy()
                                                      for name, tensor in state.items()})
    for (name, a), b in zip(from_torch.state_dict().items(), from_numpy.state_dict().values()):
        assert torch.equal(a, b), name


CFG = CONFIGS["4 layers, 3 heads, no bias, untied"]


@pytest.fixture
def state():
    return dict(random_hf_gpt2(CFG).state_dict())


def test_missing_tensor_is_named(state):
    del state["transformer.h.2.mlp.c_fc.bias"]
    with pytest.raises(KeyError, match=r"'h\.2\.mlp\.c_fc\.bias' is missing"):
        load_gpt2_params(course_model(CFG), state)


def test_wrong_shape_is_named(state):
    state["transformer.wpe.weight"] = torch.zeros(CFG.context_length + 4, CFG.emb_dim)
    with pytest.raises(ValueError, match=r"'wpe\.weight' has shape \(24, 48\).*expects \(20, 48\)"):
        load_gpt2_params(course_model(CFG), state)


def test_transposed_weight_is_rejected(state):
    state["transformer.h.1.mlp.c_proj.weight"] = state["transformer.h.1.mlp.c_proj.weight"].T
    with pytest.raises(ValueError, match=r"'h\.1\.mlp\.c_proj\.weight' has shape \(48, 192\)"):
        load_gpt2_params(course_model(CFG), state)


def test_wrong_layer_count_is_reported(state):
    with pytest.raises(ValueError, match="GPT-2 weights have 4 blocks, the model has 3"):
        load_gpt2_params(course_model(replace(CFG, n_layers=3)), state)


def test_nonzero_qkv_bias_into_bias_free_model_is_rejected():
    state = random_hf_gpt2(replace(CFG, qkv_bias=True)).state_dict()
    with pytest.raises(ValueError, match=r"'h\.0\.attn\.c_attn\.bias' is non-zero.*qkv_bias=True"):
        load_gpt2_params(course_model(CFG), state)


def test_untied_model_takes_the_head_from_wte_when_the_checkpoint_has_none(state):
    head = state.pop("lm_head.weight")
    model = load_gpt2_params(course_model(CFG), state)
    assert torch.equal(model.out_head.weight, state["transformer.wte.weight"])
    assert not torch.equal(head, model.out_head.weight)


def test_a_failed_load_leaves_the_model_unchanged(state):
    del state["transformer.ln_f.bias"]  # checked last, after every block
    model = course_model(CFG)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(KeyError, match="'ln_f.bias' is missing"):
        load_gpt2_params(model, state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"{name} was overwritten by a load that failed"


def test_separate_head_into_tied_model_is_rejected(state):
    with pytest.raises(ValueError, match="'lm_head.weight' differs from 'wte.weight'.*tie_embeddings=False"):
        load_gpt2_params(course_model(replace(CFG, tie_embeddings=True)), state)
