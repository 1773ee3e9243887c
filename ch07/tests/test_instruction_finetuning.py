"""Tests of ch07/instruction_finetuning.py: checking and splitting the data, the prompt, the collate function
(padding, shifted targets, masked padding, truncation), a short finetuning run and the saved responses.

Models are tiny and randomly initialised; the data comes from the course mirror (or the network).
"""

import json

import pytest
import tiktoken
import torch

from download import download
from instruction_finetuning import (
    END_OF_TEXT_ID,
    ENTRY_KEYS,
    IGNORE_INDEX,
    InstructionDataError,
    InstructionDataset,
    collate,
    create_instruction_loader,
    extract_response,
    format_input,
    format_prompt,
    generate_responses,
    load_instruction_data,
    read_entries,
    save_json,
    split_data,
    validate_entries,
)
from previous_chapters import GPTConfig, GPTModel, batch_loss, loader_loss, train

PUBLISHED_RESPONSES_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                           "ch07/01_main-chapter-code/instruction-data-with-response.json")
PUBLISHED_RESPONSES_SHA256 = "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943"
TINY = GPTConfig(context_length=256, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=True,
                 tie_embeddings=True)
P, X = END_OF_TEXT_ID, IGNORE_INDEX  # short names for the expected tensors below


@pytest.fixture(scope="module")
def tokenizer():
    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    return load_instruction_data(tmp_path_factory.mktemp("data") / "instruction-data.json")


def tiny_model(seed=123):
    torch.manual_seed(seed)
    return GPTModel(TINY)


def entry(instruction="Name a primary color.", input="", output="Red."):
    return {"instruction": instruction, "input": input, "output": output}


# ------------------------------------------------------------------------------------------------ data checks

@pytest.mark.parametrize("bad, message", [
    ([entry(), entry(), {"instruction": "x", "input": ""}], "entry 2 has no 'output' key"),
    ([entry(), {**entry(), "input": None}], "entry 1, key 'input': expected a string, got NoneType"),
    ([{**entry(), "instruction": ["a", "list"]}], "entry 0, key 'instruction': expected a string, got list"),
    ([entry(), "just text"], "entry 1 is str, not an object"),
    ({"instruction": "x", "input": "", "output": "y"}, "expected a list of entries, got dict"),
])
def test_bad_entries_are_named(bad, message):
    with pytest.raises(InstructionDataError, match=message):
        validate_entries(bad)


def test_read_entries_names_the_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([entry(), {"input": "", "output": "y"}]), encoding="utf-8")
    with pytest.raises(InstructionDataError, match=f"{path}: entry 1 has no 'instruction' key"):
        read_entries(path)
    path.write_text('[{"instruction": "x",', encoding="utf-8")
    with pytest.raises(InstructionDataError, match=f"{path} is not valid JSON"):
        read_entries(path)
    path.write_text(json.dumps([{**entry(), "chosen": "a"}]), encoding="utf-8")
    with pytest.raises(InstructionDataError, match="entry 0 has no 'rejected' key"):
        read_entries(path, keys=(*ENTRY_KEYS, "chosen", "rejected"))


def test_the_data_set_loads_and_is_checked(entries):
    assert len(entries) == 1100
    assert sum(e["input"] == "" for e in entries) == 775  # as the data README says
    assert validate_entries(entries) is entries


# ----------------------------------------------------------------------------------------------------- split

def test_split_sizes_and_order():
    train, test, val = split_data(list(range(20)))
    assert (train, test, val) == (list(range(17)), [17, 18], [19])


def test_split_of_the_data_set_lines_up_with_the_published_responses(entries, tmp_path):
    train, test, val = split_data(entries)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train + test + val == entries
    published = json.loads(download(PUBLISHED_RESPONSES_URL, tmp_path / "published.json",
                                    sha256=PUBLISHED_RESPONSES_SHA256).read_text(encoding="utf-8"))
    assert [{k: e[k] for k in ENTRY_KEYS} for e in published] == test


# ---------------------------------------------------------------------------------------------------- prompt

PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.")


def test_prompt_with_and_without_input():
    assert format_input(entry()) == f"{PREAMBLE}\n\n### Instruction:\nName a primary color."
    with_input = entry("Edit the following sentence for grammar.", "He go to the park.", "He goes to the park.")
    assert format_input(with_input) == (f"{PREAMBLE}\n\n### Instruction:\nEdit the following sentence for grammar."
                                        "\n\n### Input:\nHe go to the park.")
    assert format_prompt(with_input) == format_input(with_input) + "\n\n### Response:\n"


def test_dataset_holds_prompt_and_answer_tokens(tokenizer):
    data = [entry(), entry("Add 2 and 3.", "", "5")]
    dataset = InstructionDataset(data, tokenizer)
    assert len(dataset) == 2
    assert dataset[1] == tokenizer.encode(format_prompt(data[1]) + "5")
    assert tokenizer.decode(dataset[0]).endswith("### Response:\nRed.")


# --------------------------------------------------------------------------------------------------- collate

def test_collate_pads_shifts_and_masks():
    inputs, targets = collate([[1, 2, 3], [4, 5], [6]])
    assert torch.equal(inputs, torch.tensor([[1, 2, 3], [4, 5, P], [6, P, P]]))
    # targets: the inputs shifted by one; the first padding token stays, the rest become -100
    assert torch.equal(targets, torch.tensor([[2, 3, P], [5, P, X], [P, X, X]]))


def test_collate_options():
    inputs, targets = collate([[1, 2, 3, 4], [5]], pad_token_id=0, ignore_index=-1, allowed_max_length=2)
    assert torch.equal(inputs, torch.tensor([[1, 2], [5, 0]]))
    assert torch.equal(targets, torch.tensor([[2, 3], [0, -1]]))
    inputs, targets = collate([[1, 2]], device="meta")
    assert inputs.device.type == targets.device.type == "meta"


def test_collate_keeps_an_end_of_text_token_inside_a_sequence():
    """Only padding is masked, by position: a token id equal to the padding id inside the text counts."""
    _, targets = collate([[1, P, 2], [3]])
    assert torch.equal(targets, torch.tensor([[P, 2, P], [P, X, X]]))


def test_padding_does_not_change_the_loss(tokenizer):
    """Each sequence's loss terms are the same alone (one end-of-text token) as in a padded batch."""
    model = tiny_model().eval()
    short, long = tokenizer.encode("Red is a color."), tokenizer.encode("Blue, green and yellow are colors too.")
    with torch.no_grad():
        alone = [batch_loss(*collate([ids]), model, "cpu") * len(ids) for ids in (short, long)]
        together = batch_loss(*collate([short, long]), model, "cpu")
        unmasked = batch_loss(*collate([short, long], ignore_index=P), model, "cpu")
    expected = sum(alone) / (len(short) + len(long))
    torch.testing.assert_close(together, expected)
    assert not torch.isclose(unmasked, expected)  # the test can tell whether padding counts


def test_loaders_batch_and_place_on_the_device(tokenizer, entries):
    loader = create_instruction_loader(entries[:20], tokenizer, batch_size=8, device="meta", allowed_max_length=64)
    batches = list(loader)
    assert [len(inputs) for inputs, _ in batches] == [8, 8, 4]
    assert all(inputs.device.type == "meta" and inputs.shape[1] <= 64 for inputs, _ in batches)
    shuffled = create_instruction_loader(entries[:20], tokenizer, batch_size=8, shuffle=True, drop_last=True)
    assert len(shuffled) == 2


# ------------------------------------------------------------------------------------------ training, responses

def test_a_short_finetuning_run_lowers_the_loss(tokenizer, entries):
    data = entries[:8]
    torch.manual_seed(123)
    loader = create_instruction_loader(data, tokenizer, batch_size=4, shuffle=True, drop_last=True)
    model = tiny_model()
    with torch.no_grad():
        before = loader_loss(loader, model.eval(), "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    history = train(model, loader, loader, optimizer, "cpu", num_epochs=3, eval_freq=2, eval_iter=2,
                    start_context=format_prompt(data[0]), tokenizer=tokenizer, sample_tokens=3)
    with torch.no_grad():
        after = loader_loss(loader, model.eval(), "cpu")
    assert after < before - 0.5, (before, after)
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_extract_response(tokenizer):
    prompt = tokenizer.encode(format_prompt(entry()))
    answer = tokenizer.encode(" Red is a primary color.\n")
    ids = torch.tensor([prompt + answer + [P] + tokenizer.encode("junk after the end")])
    assert extract_response(ids, len(prompt), tokenizer) == "Red is a primary color."
    assert extract_response(torch.tensor([prompt + answer]), len(prompt), tokenizer) == "Red is a primary color."
    assert extract_response(torch.tensor([prompt + [P, P]]), len(prompt), tokenizer) == ""


def test_generated_responses_are_saved_in_the_published_format(tokenizer, entries, tmp_path):
    test = split_data(entries)[1][:2]
    originals = json.loads(json.dumps(test))
    responses = generate_responses(tiny_model(), test, tokenizer, "cpu", max_new_tokens=5)
    assert test == originals  # the entries themselves are left unchanged
    assert [{k: r[k] for k in ENTRY_KEYS} for r in responses] == test
    assert all(isinstance(r["model_response"], str) for r in responses)
    path = save_json(responses, tmp_path / "out" / "responses.json")
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == responses
    published = json.loads(download(PUBLISHED_RESPONSES_URL, tmp_path / "published.json",
                                    sha256=PUBLISHED_RESPONSES_SHA256).read_text(encoding="utf-8"))
    assert all(r.keys() == published[0].keys() for r in saved)
    assert [p.name for p in path.parent.iterdir()] == ["responses.json"]  # no temporary file left


def test_save_json_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "responses.json"
    save_json([{"a": 1}], path)
    with pytest.raises(TypeError):
        save_json([{"a": object()}], path)  # not serializable: fails part-way through writing
    assert json.loads(path.read_text(encoding="utf-8")) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["responses.json"]
