"""Tests of the DPO bonus: the data and its split, the collate masks, response log-probabilities, the loss, training."""

import json
import math
from dataclasses import replace

import pytest
import tiktoken
import torch

import dpo
from download import download
from dpo import (
    PreferenceDataset,
    batch_log_probs,
    collate_preferences,
    create_preference_loader,
    dpo_loss,
    evaluate_dpo,
    frozen_reference,
    load_preference_data,
    response_log_probs,
    train_dpo,
)
from previous_chapters import END_OF_TEXT_ID, GPTConfig, GPTModel, InstructionDataError, format_prompt, split_data

# Small enough to be fast, with GPT-2's vocabulary so that real tokens and the <|endoftext|> padding fit.
TINY = GPTConfig(vocab_size=50257, context_length=96, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
ENTRIES = [
    {"instruction": "Name a primary color.", "input": "", "chosen": "Red is a primary color.",
     "rejected": "Obviously red, everyone knows that."},
    {"instruction": "Convert to the past tense.", "input": "I walk home.", "chosen": "I walked home.",
     "rejected": "Walked. I walked home, fine."},
]
# The mirror's 110 responses of the book's finetuned model cover the book's test split: entries 935 to 1044.
RESPONSES_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                 "ch07/01_main-chapter-code/instruction-data-with-response.json")
RESPONSES_SHA256 = "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943"


@pytest.fixture(scope="module")
def tokenizer():
    return tiktoken.get_encoding("gpt2")


def tiny_model(seed=123, drop_rate=0.0):
    torch.manual_seed(seed)
    return GPTModel(replace(TINY, drop_rate=drop_rate))


def test_data_split_in_file_order_like_chapter_7(tmp_path):
    entries = load_preference_data(tmp_path / "preference.json")
    train, test, val = split_data(entries)
    assert (len(entries), len(train), len(test), len(val)) == (1100, 935, 110, 55)
    assert train == entries[:935] and test == entries[935:1045] and val == entries[1045:]
    book_test = json.loads(download(RESPONSES_URL, tmp_path / "responses.json", RESPONSES_SHA256).read_text())
    assert [e["instruction"] for e in test] == [e["instruction"] for e in book_test]


@pytest.mark.parametrize("broken, message", [
    ({"instruction": "Hi", "input": "", "chosen": "Hello."}, "entry 1 has no 'rejected' key"),
    ({"instruction": "Hi", "input": "", "chosen": ["Hello."], "rejected": "Go away."},
     "entry 1, key 'chosen': expected a string, got list"),
])
def test_bad_entries_are_named(tmp_path, monkeypatch, broken, message):
    path = tmp_path / "preference.json"
    path.write_text(json.dumps([ENTRIES[0], broken]))
    monkeypatch.setattr(dpo, "PREFERENCE_SHA256", None)  # keep the broken file instead of fetching the real one
    with pytest.raises(InstructionDataError, match=message):
        load_preference_data(path)


def test_dataset_encodes_prompt_and_responses_separately(tokenizer):
    item = PreferenceDataset(ENTRIES, tokenizer)[1]
    assert tokenizer.decode(item["prompt"]) == format_prompt(ENTRIES[1])
    assert item["chosen"] == tokenizer.encode("I walked home.") + [END_OF_TEXT_ID]
    assert item["rejected"] == tokenizer.encode("Walked. I walked home, fine.") + [END_OF_TEXT_ID]


def test_collate_pads_each_kind_and_masks_only_response_tokens():
    batch = [{"prompt": [1, 2, 3], "chosen": [4, 5], "rejected": [6]},
             {"prompt": [7], "chosen": [8, 9, 10, 11], "rejected": [12, 13]}]
    out = collate_preferences(batch, pad_token_id=0)
    assert out["chosen"].tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 11]]
    assert out["chosen_mask"].tolist() == [[False, False, False, True, True], [False, True, True, True, True]]
    assert out["rejected"].tolist() == [[1, 2, 3, 6], [7, 12, 13, 0]]
    assert out["rejected_mask"].tolist() == [[False, False, False, True], [False, True, True, False]]
    cut = collate_preferences(batch, pad_token_id=0, max_length=4)
    assert cut["chosen"].tolist() == [[1, 2, 3, 4], [7, 8, 9, 10]]
    assert cut["chosen_mask"].tolist() == [[False, False, False, True], [False, True, True, True]]


def test_log_probs_count_exactly_the_response_tokens(tokenizer):
    """Against an independent computation: one forward pass per response token, on the tokens before it."""
    model = tiny_model().eval()
    items = PreferenceDataset(ENTRIES, tokenizer).encoded
    batch = collate_preferences(items)
    token_ids, mask = batch["rejected"], batch["rejected_mask"]
    ends = torch.tensor([[len(item["prompt"]) + len(item["rejected"])] for item in items])  # (batch, 1)
    with torch.no_grad():
        got = response_log_probs(model, token_ids, mask)
        for row, item in enumerate(items):
            expected = sum(torch.log_softmax(model(token_ids[row:row + 1, :t])[0, -1], dim=-1)[token_ids[row, t]]
                           for t in range(len(item["prompt"]), ends[row, 0]))
            assert got[row].item() == pytest.approx(expected.item(), rel=1e-5)
        padding = torch.arange(token_ids.shape[1]) >= ends  # (batch, tokens)
        assert padding.any()
        assert torch.allclose(response_log_probs(model, token_ids.masked_fill(padding, 13), mask), got)


def test_loss_matches_a_hand_computation():
    loss, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen=torch.tensor([-4.0, -6.0]), policy_rejected=torch.tensor([-5.0, -3.0]),
        reference_chosen=torch.tensor([-5.0, -6.5]), reference_rejected=torch.tensor([-4.0, -3.5]), beta=0.5)
    # rewards 0.5 * (policy - reference): chosen (0.5, 0.25), rejected (-0.5, 0.25); margins 1 and 0
    assert chosen_rewards.tolist() == [0.5, 0.25] and rejected_rewards.tolist() == [-0.5, 0.25]
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1.0)) + math.log(2)) / 2, rel=1e-6)


def test_policy_equal_to_reference_gives_log_2_and_no_margin(tokenizer):
    """Measured with dropout in the model: evaluation must switch it off in the policy and the reference alike."""
    policy = tiny_model(drop_rate=0.5).train()
    reference = frozen_reference(policy)
    loader = create_preference_loader(ENTRIES, tokenizer, batch_size=1)
    metrics = evaluate_dpo(policy, reference, loader, device="cpu", beta=0.1)
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["margin"] == 0.0 and metrics["accuracy"] == 0.0
    assert metrics["chosen_reward"] == 0.0 and metrics["rejected_reward"] == 0.0
    assert policy.training and not reference.training
    assert not any(p.requires_grad for p in reference.parameters())


def test_one_step_raises_the_margin_and_leaves_the_reference_alone(tokenizer):
    policy = tiny_model()
    reference = frozen_reference(policy)
    before = {name: p.clone() for name, p in reference.state_dict().items()}
    loader = create_preference_loader(ENTRIES, tokenizer, batch_size=2)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    history = train_dpo(policy, reference, loader, loader, optimizer, "cpu", num_epochs=1, beta=0.1, eval_freq=1)
    after = history["train"][0]  # measured after the one step
    assert history["step"] == [1]
    assert after["margin"] > 0 and after["accuracy"] == 1.0 and after["loss"] < math.log(2)
    assert after["chosen_reward"] > after["rejected_reward"]
    assert all(torch.equal(p, before[name]) for name, p in reference.state_dict().items())
    policy_lps = batch_log_probs(policy, reference, next(iter(loader)), "cpu")
    assert not torch.equal(policy_lps[0], policy_lps[2])  # the policy did move away from the reference
