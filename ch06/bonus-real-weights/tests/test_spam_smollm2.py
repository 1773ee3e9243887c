"""The classifier's cached path against the full model, padding, parameter selection, batching, training and the
bag-of-words baseline, on tiny random Llama models (fast; the notebook checks the cache on SmolLM2 itself)."""

import copy

import pytest
import torch

from llama import LlamaConfig, LlamaModel
from lora import LoRALayer
from spam_smollm2 import (
    bag_of_words,
    bag_of_words_vocabulary,
    cached_logits,
    classification_logits,
    fit_logistic_regression,
    frozen_states,
    full_logits,
    in_order,
    last_token_positions,
    length_batches,
    make_classifier,
    pad_batch,
    run_epoch,
    time_steps,
    top_logits,
    train,
    unpadded_messages,
)

TINY = LlamaConfig(vocab_size=50, context_length=64, emb_dim=32, hidden_dim=64, n_heads=4, n_kv_heads=2, n_layers=3)
PAD = 0


def tiny_model(seed=1):
    torch.manual_seed(seed)
    model = LlamaModel(TINY).eval()
    with torch.no_grad():  # norm weights start at 1; random ones catch a norm applied in the wrong place
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def random_messages(count=11, seed=2):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 20, (count,), generator=generator).tolist()
    return [torch.randint(1, TINY.vocab_size, (n,), generator=generator) for n in lengths]  # 1..: never PAD


@pytest.mark.parametrize("trainable_blocks, lora_rank", [(1, 0), (2, 0), (3, 0), (0, 0), (1, 4), (2, 4)])
def test_cached_frozen_states_give_the_full_models_logits(trainable_blocks, lora_rank):
    model = tiny_model()
    first_block = make_classifier(model, trainable_blocks, lora_rank)
    with torch.no_grad():  # LoRA's B starts at zero; make the update count
        for module in model.modules():
            if isinstance(module, LoRALayer):
                module.B.normal_(0, 0.1)
    messages = random_messages()
    # the full model on the messages padded to one common length, as chapter 6's dataset pads them
    input_ids = torch.full((len(messages), 25), PAD)
    for row, message in enumerate(messages):
        input_ids[row, :len(message)] = message
    with torch.no_grad():
        full = classification_logits(model, input_ids, last_token_positions(input_ids, PAD))
        states = frozen_states(model, messages, first_block, batch_size=4)  # other batches, other padding
        cached = cached_logits(model, states, first_block)(list(range(len(messages))))
    assert [tuple(s.shape) for s in states] == [(len(m), TINY.emb_dim) for m in messages]
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full_logits(model, messages, PAD)(list(range(len(messages)))), full,
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full, model(input_ids)[:, -1], atol=1e-3)  # the last padded position differs


def test_last_token_positions_respect_padding():
    ids = torch.tensor([[5, 6, 7, PAD, PAD], [5, PAD, 7, 8, 9], [5, PAD, PAD, PAD, PAD]])
    assert last_token_positions(ids, PAD).tolist() == [2, 4, 0]  # a padding id inside a message is kept
    with pytest.raises(ValueError, match=r"row\(s\) \[1\].*only padding"):
        last_token_positions(torch.tensor([[5, PAD], [PAD, PAD]]), PAD)


def test_more_padding_changes_no_logit():
    model = tiny_model()
    make_classifier(model, 1)
    short = torch.tensor([[3, 4, 5, 6, PAD, PAD]])
    longer = torch.cat([short, torch.full((1, 9), PAD)], dim=1)
    with torch.no_grad():
        logits = [classification_logits(model, ids, last_token_positions(ids, PAD)) for ids in (short, longer)]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def test_unpadded_messages_and_pad_batch_undo_each_other():
    class Dataset:  # what unpadded_messages reads of chapter 6's SpamDataset
        encoded = [[4, 5, PAD, PAD], [7, 8, 9, 3], [6, PAD, PAD, PAD]]
        labels = [1, 0, 1]

    messages, labels = unpadded_messages(Dataset(), PAD)
    assert [m.tolist() for m in messages] == [[4, 5], [7, 8, 9, 3], [6]]
    assert labels.tolist() == [1, 0, 1]
    padded, positions = pad_batch(messages, PAD)
    assert padded.tolist() == Dataset.encoded and positions.tolist() == [1, 3, 0]


@pytest.mark.parametrize("trainable_blocks", [1, 2])
def test_exactly_the_intended_parameters_train(trainable_blocks):
    model = tiny_model()
    first_block = make_classifier(model, trainable_blocks)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    blocks = {f"trf_blocks.{i}.{name}" for i in range(first_block, TINY.n_layers)
              for name, _ in model.trf_blocks[i].named_parameters()}
    assert first_block == TINY.n_layers - trainable_blocks
    assert trainable == blocks | {"final_norm.weight", "out_head.weight", "out_head.bias"}
    assert tuple(model.out_head.weight.shape) == (2, TINY.emb_dim) and not model.tok_emb.weight.requires_grad


def test_with_lora_the_last_blocks_lora_matrices_the_final_norm_and_the_head_train():
    model = tiny_model()
    make_classifier(model, 1, lora_rank=2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    layers = ["att.W_query", "att.W_key", "att.W_value", "att.out_proj", "ff.gate", "ff.up", "ff.down"]
    assert trainable == ({f"trf_blocks.2.{layer}.lora.{m}" for layer in layers for m in "AB"}
                         | {"final_norm.weight", "out_head.weight", "out_head.bias"})


def test_length_batches_cover_every_message_once_and_repeat_with_the_seed():
    lengths = torch.randint(1, 100, (150,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = length_batches(lengths, 8, torch.Generator().manual_seed(5))
    assert sorted(i for batch in batches for i in batch) == list(range(150))
    assert all(len(batch) <= 8 for batch in batches)
    assert batches == length_batches(lengths, 8, torch.Generator().manual_seed(5))
    assert batches != length_batches(lengths, 8, torch.Generator().manual_seed(6))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 20  # similar lengths in a batch (random batches of 8 spread over about 75)
    assert in_order(5, 2) == [[0, 1], [2, 3], [4]]


def test_training_on_cached_states_learns_and_moves_only_trainable_parameters():
    model = tiny_model()
    first_block = make_classifier(model, 1)
    messages = random_messages(count=32, seed=3)
    labels = torch.tensor([int(m[-1] > TINY.vocab_size // 2) for m in messages])  # readable at the last token
    states = frozen_states(model, messages, first_block)
    before = copy.deepcopy(model.state_dict())
    logits_of = cached_logits(model, states, first_block)
    history = train(model, logits_of, labels, logits_of, labels, [len(m) for m in messages], num_epochs=8, lr=3e-3)
    assert history["epoch"] == list(range(1, 9)) and history["examples_seen"][-1] == 8 * 32
    assert history["train_loss"][-1] < history["train_loss"][0] * 0.7
    for name, parameter in model.state_dict().items():
        moved = not torch.equal(parameter, before[name])
        assert moved == (name.startswith("trf_blocks.2.") or name.startswith(("final_norm", "out_head"))), name


def test_run_epoch_counts_loss_and_accuracy_and_time_steps_reports_the_load():
    labels = torch.tensor([0, 1, 1])
    fixed = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])  # right, right, wrong
    loss, accuracy = run_epoch(lambda batch: fixed[batch], labels, [[0, 1], [2]])
    assert accuracy == pytest.approx(2 / 3)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(fixed, labels).item())
    model = tiny_model()
    first_block = make_classifier(model, 1)
    messages = random_messages(count=4)
    seconds, load = time_steps(cached_logits(model, frozen_states(model, messages, first_block), first_block),
                               torch.tensor([0, 1, 0, 1]), [[0, 1], [2, 3]], model)
    assert seconds > 0 and len(load) == 2 and all(value >= 0 for value in load)


def test_bag_of_words_logistic_regression_separates_a_toy_problem():
    spam = ["win a free prize now", "free cash prize call now", "claim your free prize", "win cash now call"]
    ham = ["see you at lunch", "are you home yet", "lunch at noon ok", "call you when home"]
    vocabulary = bag_of_words_vocabulary(spam + ham, min_count=2)
    assert "prize" in vocabulary and "noon" not in vocabulary  # "noon" occurs once
    features = bag_of_words(spam + ham, vocabulary)
    assert features.shape == (8, len(vocabulary)) and set(features.unique().tolist()) == {0.0, 1.0}
    classifier = fit_logistic_regression(features, torch.tensor([1] * 4 + [0] * 4), l2=1e-3)
    held_out = bag_of_words(["FREE prize, call now!", "home for lunch?"], vocabulary)
    assert classifier(held_out).argmax(dim=-1).tolist() == [1, 0]
    assert classifier(features).argmax(dim=-1).tolist() == [1] * 4 + [0] * 4


def test_bag_of_words_rejects_bad_input():
    with pytest.raises(TypeError, match="list of strings"):
        bag_of_words_vocabulary(["fine", 3])
    with pytest.raises(TypeError, match="list of strings"):
        bag_of_words("one text", {"one": 0})
    with pytest.raises(ValueError, match="no word occurs in 2"):
        bag_of_words_vocabulary(["only once", "something else"])
    features = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, got \[2\]"):
        fit_logistic_regression(features, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(n, d\).*\(3, 2\) and \(2,\)"):
        fit_logistic_regression(features, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_logistic_regression(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), torch.tensor([0, 1]))


def test_top_logits_with_no_block_left_is_norm_and_head():
    model = tiny_model()
    first_block = make_classifier(model, 0)
    hidden = torch.randn(2, 5, TINY.emb_dim)
    expected = model.out_head(model.final_norm(hidden[[0, 1], [4, 2]]))
    torch.testing.assert_close(top_logits(model, hidden, torch.tensor([4, 2]), first_block), expected)
