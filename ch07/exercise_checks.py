"""Automatic feedback for the chapter 7 exercises (exercises.ipynb).

Each check recomputes the expected result its own way, prints a short confirmation when the answer is right and
raises AssertionError with a hint (never the answer) when it is wrong or still missing.
"""

import tiktoken
import torch
import torch.nn as nn

from instruction_finetuning import IGNORE_INDEX, collate, format_prompt, load_instruction_data, split_data
from lora import LinearWithLoRA

# Entries whose prompts the checks format: with an input and without one.
CHECK_ENTRIES = [
    {"instruction": "Rewrite the sentence in the past tense.", "input": "She walks to school.",
     "output": "She walked to school."},
    {"instruction": "What is the capital of Italy?", "input": "", "output": "The capital of Italy is Rome."},
]


def _require(**answers):
    for name, answer in answers.items():
        assert answer is not None, f"`{name}` is still None: write your answer in the cell above and run it."


def _tokenizer():
    return tiktoken.get_encoding("gpt2")


def check_exercise_7_1(format_prompt_phi3, alpaca_tokens, phi3_tokens):
    """The Phi-3 prompt style, and the number of tokens of the 935 training examples in both styles."""
    _require(format_prompt_phi3=format_prompt_phi3, alpaca_tokens=alpaca_tokens, phi3_tokens=phi3_tokens)
    for entry in CHECK_ENTRIES:
        lines = ["<|user|>", entry["instruction"], *([entry["input"]] if entry["input"] else []), "<|assistant|>", ""]
        expected = "\n".join(lines)
        got = format_prompt_phi3(entry)
        assert isinstance(got, str), "`format_prompt_phi3(entry)` should return a string"
        assert "###" not in got, \
            "`format_prompt_phi3` still writes Alpaca's ### headers: use <|user|> and <|assistant|>"
        assert got.endswith("<|assistant|>\n"), \
            "the prompt should end with '<|assistant|>' and a newline: the answer starts on the next line"
        if not entry["input"]:
            assert got == expected, \
                ("for an entry without input the prompt is '<|user|>', the instruction and '<|assistant|>', each on "
                 "its own line: an empty input adds no line")
        assert got == expected, \
            "for an entry with an input the input goes on its own line, after the instruction, before <|assistant|>"
    tokenizer = _tokenizer()
    train_data = split_data(load_instruction_data())[0]
    prompts = {"alpaca_tokens": format_prompt, "phi3_tokens": format_prompt_phi3}
    counts = {name: sum(len(tokenizer.encode(prompt(e) + e["output"])) for e in train_data)
              for name, prompt in prompts.items()}
    for name, answer in [("alpaca_tokens", alpaca_tokens), ("phi3_tokens", phi3_tokens)]:
        assert isinstance(answer, int), f"`{name}` should be a Python int (a count of tokens)"
        prompt_only = sum(len(tokenizer.encode(prompts[name](e))) for e in train_data)
        assert answer != prompt_only, f"`{name}` counts only the prompts: count prompt and output together"
        assert answer == counts[name], \
            (f"`{name}` is not the number of tokens of the 935 training examples in that style: encode "
             "prompt + output of every training entry and add up the lengths")
    print(f"Correct: the Phi-3 style saves {alpaca_tokens - phi3_tokens:,} of {alpaca_tokens:,} tokens "
          f"({(alpaca_tokens - phi3_tokens) / alpaca_tokens:.0%}) in the training examples.")


def check_exercise_7_2(MaskedInstructionDataset, collate_masked):
    """A data set that also returns each prompt's length in tokens, and a collate function masking the prompt."""
    _require(MaskedInstructionDataset=MaskedInstructionDataset, collate_masked=collate_masked)
    tokenizer = _tokenizer()
    dataset = MaskedInstructionDataset(CHECK_ENTRIES, tokenizer)
    items = [dataset[i] for i in range(len(CHECK_ENTRIES))]
    for entry, item in zip(CHECK_ENTRIES, items):
        assert isinstance(item, tuple) and len(item) == 2, \
            "`MaskedInstructionDataset` items should be (token_ids, prompt_length) pairs"
        ids, prompt_length = item
        assert list(ids) == tokenizer.encode(format_prompt(entry) + entry["output"]), \
            "the token ids should be those of the prompt followed by the output, as in InstructionDataset"
        assert prompt_length != len(format_prompt(entry)), \
            "`prompt_length` is the prompt's length in characters: it should be its number of tokens"
        assert prompt_length == len(tokenizer.encode(format_prompt(entry))), \
            "`prompt_length` should be the number of tokens of the prompt (format_prompt(entry))"
    inputs, targets = collate_masked(items)
    expected_inputs, plain_targets = collate([list(ids) for ids, _ in items])
    assert torch.equal(inputs.cpu(), expected_inputs), \
        "the inputs should stay as `collate` makes them: only the targets get -100 for the prompt"
    got = targets.cpu()
    assert got.shape == plain_targets.shape, f"`targets` should have shape {tuple(plain_targets.shape)}"
    assert (got[plain_targets == IGNORE_INDEX] == IGNORE_INDEX).all(), \
        "padding after the first end-of-text token should still be -100, as in `collate`"
    for row, (_, prompt_length) in enumerate(items):
        # the target at position t is the token at t + 1: the prompt's tokens 1 .. prompt_length - 1 are the
        # targets at positions 0 .. prompt_length - 2, and position prompt_length - 1 predicts the answer's first
        assert (got[row, :prompt_length - 1] == IGNORE_INDEX).all(), \
            "some targets of prompt tokens are not -100: mask the targets of all prompt tokens"
        assert got[row, prompt_length - 1] != IGNORE_INDEX, \
            ("the first token of the answer is masked too: it is the target at position prompt_length - 1 (the "
             "target at position t is the token at t + 1)")
        assert torch.equal(got[row, prompt_length - 1:], plain_targets[row, prompt_length - 1:]), \
            "the targets after the prompt should be those `collate` makes"
    kept = (got != IGNORE_INDEX).sum().item()
    print(f"Correct: in this batch {kept} of {got.numel()} target positions still count in the loss.")


def check_exercise_7_3(lora_model, lora_optimizer, rank, trainable_params):
    """GPT-2 with LoRA on every linear layer: only the LoRA matrices train, counted and optimized, after training."""
    _require(lora_model=lora_model, lora_optimizer=lora_optimizer, rank=rank, trainable_params=trainable_params)
    wrapped = [m for m in lora_model.modules() if isinstance(m, LinearWithLoRA)]
    assert wrapped, "`lora_model` has no LinearWithLoRA layers: call add_lora on the model"
    inner = {id(m.linear) for m in wrapped}
    bare = [name for name, m in lora_model.named_modules() if isinstance(m, nn.Linear) and id(m) not in inner]
    assert not bare, f"some linear layers have no LoRA ({bare[:3]} ...): add_lora wraps every linear layer"
    assert all(m.lora.A.shape[0] == rank for m in wrapped), "the LoRA layers do not have rank `rank`"
    lora_params = {id(p) for m in wrapped for p in m.lora.parameters()}
    trainable = [p for p in lora_model.parameters() if p.requires_grad]
    assert all(id(p) in lora_params for p in trainable), \
        "parameters outside the LoRA layers are trainable: the pretrained weights should be frozen"
    assert len(trainable) == len(lora_params), "some LoRA matrices are frozen: they are what should train"
    expected = sum(rank * (m.linear.in_features + m.linear.out_features) for m in wrapped)
    total = sum(p.numel() for p in lora_model.parameters())
    assert trainable_params != total, "`trainable_params` counts all parameters: count only the trainable ones"
    assert trainable_params == expected, \
        "`trainable_params` is not the number of trainable parameters of `lora_model`"
    optimized = {id(p) for group in lora_optimizer.param_groups for p in group["params"]}
    assert lora_params <= optimized, "`lora_optimizer` does not optimize the LoRA matrices of `lora_model`"
    assert all(m.lora.B.abs().sum() > 0 for m in wrapped), \
        "the LoRA matrices B are still zero, as add_lora creates them: train the model with `lora_optimizer`"
    print(f"Correct: {trainable_params:,} trainable parameters of {total:,} ({trainable_params / total:.2%}).")
