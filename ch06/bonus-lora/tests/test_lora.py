"""LoRA layers: a no-op at the start, mergeable, the only thing that trains, and the same computation as peft's."""

from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from lora import LinearWithLoRA, LoRALayer, add_lora, count_parameters, merge_lora
from previous_chapters import GPTConfig, GPTModel

CFG = GPTConfig(vocab_size=120, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)
RANK, ALPHA = 4, 8


def random_model(cfg=CFG, seed=123):
    """A GPTModel with every parameter random (biases and norms included), so every term of the output matters."""
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.2)
    return model


def randomize_lora(model, seed=7):
    """Give every B random values: a LoRA model as it is after training, whose updates are not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALayer):
                module.B.normal_(std=0.2, generator=generator)


def tokens(cfg=CFG, seed=1):
    return torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(seed))


def test_every_linear_layer_gets_lora():
    model = add_lora(random_model(), RANK, ALPHA)
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LinearWithLoRA)]
    per_block = ["att.W_query", "att.W_key", "att.W_value", "att.out_proj", "ff.layers.0", "ff.layers.2"]
    assert wrapped == [f"trf_blocks.{i}.{name}" for i in range(CFG.n_layers) for name in per_block] + ["out_head"]
    assert not any(isinstance(m, nn.Linear) and not isinstance(parent, LinearWithLoRA)
                   for parent in model.modules() for m in parent.children())


def test_a_is_random_b_is_zero_and_the_model_is_unchanged():
    model = random_model()
    token_ids = tokens()
    with torch.no_grad():
        expected = model(token_ids)
        add_lora(model, RANK, ALPHA)
        actual = model(token_ids)
    layer = model.trf_blocks[0].att.W_query.lora
    assert layer.A.shape == (RANK, CFG.emb_dim) and layer.B.shape == (CFG.emb_dim, RANK)
    assert layer.A.std() > 0.05 and torch.all(layer.B == 0)
    assert torch.equal(actual, expected)


def test_scaling_is_alpha_over_rank():
    layer = LoRALayer(3, 2, rank=4, alpha=2)
    with torch.no_grad():
        layer.A.fill_(1.0)
        layer.B.fill_(1.0)
    # every entry of x @ A.T @ B.T is 4 * (1 + 2 + 3) = 24, scaled by 2 / 4
    assert torch.equal(layer(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[12.0, 12.0]]))


@pytest.mark.parametrize("tie", [False, True], ids=["separate head", "tied head"])
def test_merged_weights_give_the_same_outputs(tie):
    cfg = replace(CFG, tie_embeddings=tie)
    model = add_lora(random_model(cfg), RANK, ALPHA)
    randomize_lora(model)
    token_ids = tokens(cfg)
    embedding = model.tok_emb.weight.clone()
    with torch.no_grad():
        expected = model(token_ids)
        merge_lora(model)
        actual = model(token_ids)
    assert not any(isinstance(m, (LinearWithLoRA, LoRALayer)) for m in model.modules())
    base_total = count_parameters(random_model(cfg))[1]
    separate_head = cfg.vocab_size * cfg.emb_dim if tie else 0  # merging a tied head gives it its own matrix
    assert count_parameters(model)[1] == base_total + separate_head
    assert torch.equal(model.tok_emb.weight, embedding)  # merging the head left the shared embedding alone
    with torch.no_grad():
        assert (expected - random_model(cfg)(token_ids)).abs().max() > 0.1  # the LoRA updates matter here
    assert (actual - expected).abs().max().item() <= 1e-5


def test_one_optimizer_step_changes_only_lora_parameters():
    model = add_lora(random_model(), RANK, ALPHA).train()
    before = {name: p.clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # all parameters, as users do
    token_ids = tokens()
    loss = nn.functional.cross_entropy(model(token_ids[:, :-1]).flatten(0, 1), token_ids[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    lora_b = {name for name, _ in model.named_parameters() if name.endswith("lora.B")}
    assert len(lora_b) == 6 * CFG.n_layers + 1
    # B starts at zero, so A's first gradient is zero and weight decay of a trainable A is the only change to it;
    # every base weight, bias, norm and embedding stays exactly as it was
    assert changed == lora_b | {name for name, _ in model.named_parameters() if name.endswith("lora.A")}
    assert all(p.grad is None for name, p in model.named_parameters() if ".lora." not in name)


def test_count_parameters():
    model = random_model()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total)
    add_lora(model, RANK, ALPHA)
    d, v = CFG.emb_dim, CFG.vocab_size
    per_block = 4 * RANK * (d + d) + RANK * (d + 4 * d) + RANK * (4 * d + d)  # attention (4 d-by-d), two MLP layers
    lora = CFG.n_layers * per_block + RANK * (d + v)  # and the output head
    assert count_parameters(model) == (lora, total + lora)


def test_adding_lora_twice_or_to_a_bare_layer_is_an_error():
    model = add_lora(random_model(), RANK, ALPHA)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model, RANK, ALPHA)
    with pytest.raises(ValueError, match="layers inside a model"):
        add_lora(nn.Linear(3, 2), RANK, ALPHA)
    with pytest.raises(ValueError, match="rank must be at least 1, got 0"):
        LoRALayer(3, 2, rank=0, alpha=1)


def test_lora_follows_the_device_and_dtype_of_its_layer():
    layer = LinearWithLoRA(nn.Linear(3, 2, dtype=torch.float64), RANK, ALPHA)
    assert layer.lora.A.dtype == layer.lora.B.dtype == torch.float64
    assert layer(torch.ones(1, 3, dtype=torch.float64)).dtype == torch.float64
