"""Our LoRA computes what the peft library's LoRA computes on Hugging Face's GPT-2, given the same weights.

The reference is a GPT2LMHeadModel built from a GPT2Config (nothing is downloaded) with every tensor random, and
peft's LoRA on all its linear layers: the fused query/key/value projection ``c_attn``, the attention output
``attn.c_proj``, the MLP's ``c_fc`` and ``mlp.c_proj``, and the output head ``lm_head``. The course's GPTModel gets
the same base weights (``load_gpt2_params``) and LoRA on every ``nn.Linear``; then peft's A and B matrices, set to
random values (B non-zero, as after training), are copied into it.

GPT-2 computes query, key and value with one fused layer, so peft gives them one LoRA pair: A (r, d) and
B (3d, r). Its update B @ A, split by rows into three (d, d) blocks, is the update of each projection; the course's
model has three separate LoRA layers, which then hold the same A and one third of B each.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from lora import add_lora, merge_lora
from previous_chapters import GPTConfig, GPTModel, load_gpt2_params

RANK, ALPHA = 4, 8
NORM_WEIGHTS = ("ln_1.weight", "ln_2.weight", "ln_f.weight")


def random_gpt2(cfg):
    """A GPT2LMHeadModel shaped like ``cfg``, dropout off, every tensor random."""
    hf_config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                           n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(hf_config).eval()
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.normal_(std=0.1, generator=generator).add_(1.0 if name.endswith(NORM_WEIGHTS) else 0.0)
    return model


def peft_gpt2(cfg):
    """GPT-2 with peft's LoRA on every linear layer, its A and B matrices random."""
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                        target_modules=["c_attn", "c_proj", "c_fc", "lm_head"])
    model = get_peft_model(random_gpt2(cfg), config).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.normal_(std=0.1, generator=generator)
    return model


def copy_peft_lora(peft_model, model):
    """Put peft's LoRA matrices into the course's model (with LoRA added), layer by layer."""
    d = model.cfg.emb_dim
    reference = peft_model.base_model.model

    def pair(module):
        return module.lora_A["default"].weight, module.lora_B["default"].weight  # (r, in), (out, r)

    copies = []
    for block, hf_block in zip(model.trf_blocks, reference.transformer.h):
        qkv_a, qkv_b = pair(hf_block.attn.c_attn)
        for linear, b in zip((block.att.W_query, block.att.W_key, block.att.W_value), qkv_b.split(d)):
            copies += [(linear.lora.A, qkv_a), (linear.lora.B, b)]
        for linear, hf_linear in [(block.att.out_proj, hf_block.attn.c_proj), (block.ff.layers[0], hf_block.mlp.c_fc),
                                  (block.ff.layers[2], hf_block.mlp.c_proj)]:
            copies += zip((linear.lora.A, linear.lora.B), pair(hf_linear))
    copies += zip((model.out_head.lora.A, model.out_head.lora.B), pair(reference.lm_head))
    with torch.no_grad():
        for ours, theirs in copies:
            ours.copy_(theirs)  # copy_ checks the shapes
    return model


CONFIGS = {
    "tied head": GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0,
                           qkv_bias=True, tie_embeddings=True),
    "separate head": GPTConfig(vocab_size=200, context_length=12, emb_dim=48, n_heads=3, n_layers=1, drop_rate=0.0,
                               qkv_bias=True, tie_embeddings=False),
}


@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set")  # peft sets it per layer: Conv1D yes, lm_head no
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")  # about saving peft adapters: not used
@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_match_peft(name):
    cfg = CONFIGS[name]
    reference = peft_gpt2(cfg)
    base_weights = {key.replace("base_model.model.", "").replace(".base_layer", ""): value
                    for key, value in reference.state_dict().items() if ".lora_" not in key}
    model = copy_peft_lora(reference, add_lora(load_gpt2_params(GPTModel(cfg).eval(), base_weights), RANK, ALPHA))
    token_ids = torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=token_ids).logits
        with reference.disable_adapter():
            base = reference(input_ids=token_ids).logits
        actual = model(token_ids)
        merged = merge_lora(model)(token_ids)
    assert (expected - base).abs().max() > 0.1  # the LoRA updates change the logits: the comparison means something
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (merged - expected).abs().max().item() <= 1e-5
