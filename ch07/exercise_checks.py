"""Automatic feedback for the chapter 7 exercises (exercises.ipynb).

Each check recomputes the expected result its own way, prints a short confirmation when the answer is right and
raises AssertionError with a hint (never the answer) when it is wrong or still missing.
"""

import math

import tiktoken
import torch
import torch.nn as nn
from safetensors import safe_open

from gpt_download import default_models_dir
from instruction_finetuning import IGNORE_INDEX, collate, format_prompt, load_instruction_data, split_data
from lora import LinearWithLoRA
from previous_chapters import GPTModel

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
        first_answer_target = prompt_length - 1  # targets are the inputs shifted by one position
        assert (got[row, :first_answer_target] == IGNORE_INDEX).all(), \
            "some targets of prompt tokens are not -100: mask the targets of all prompt tokens"
        assert got[row, first_answer_target] != IGNORE_INDEX, \
            ("the first token of the answer is masked too, so the model never learns how to start an answer: "
             "write out the targets of a three-token prompt followed by a two-token answer and see which "
             "positions hold prompt tokens")
        assert torch.equal(got[row, first_answer_target:], plain_targets[row, first_answer_target:]), \
            "the targets after the prompt should be those `collate` makes"
    kept = (got != IGNORE_INDEX).sum().item()
    print(f"Correct: in this batch {kept} of {got.numel()} target positions still count in the loss.")


LORA_RANK, LORA_ALPHA = 16, 16  # exercise 7.3's settings, with those of the chapter's optimizer:
LEARNING_RATE, WEIGHT_DECAY = 5e-5, 0.1


def _assert_gpt2_medium(model):
    """Check that ``model`` holds GPT-2 medium as ``load_gpt2("355M")`` loads it.

    Two frozen tensors that LoRA never wraps (the position embedding and the final norm's scale) are read from the
    checkpoint file load_gpt2 downloaded and compared with the model's; loading a second copy of the model for the
    comparison would double the memory the exercise needs.
    """
    assert isinstance(model, GPTModel), \
        f"`lora_model` should be the GPTModel that load_gpt2 returns, not {type(model).__name__}"
    path = default_models_dir() / "355M" / "model.safetensors"
    assert path.is_file(), \
        (f"there is no {path.as_posix()}: this check compares `lora_model` with the safetensors checkpoint that "
         "load_gpt2('355M') downloads with its default source=\"hf\"; if you loaded the model with "
         "source=\"openai\", load it with the default source instead")
    with safe_open(path, framework="pt") as checkpoint:
        for key, tensor in [("wpe.weight", model.pos_emb.weight), ("ln_f.weight", model.final_norm.scale)]:
            expected = checkpoint.get_tensor(key)
            assert tensor.shape == expected.shape and torch.equal(tensor.detach().cpu(), expected), \
                ("`lora_model` is not GPT-2 medium: the exercise finetunes the chapter's model, loaded with "
                 "load_gpt2('355M')")


def check_exercise_7_3(lora_model, lora_optimizer, rank, trainable_params):
    """GPT-2 medium with LoRA on every linear layer: only the LoRA matrices train, counted and optimized by AdamW
    with the chapter's settings, after training."""
    _require(lora_model=lora_model, lora_optimizer=lora_optimizer, rank=rank, trainable_params=trainable_params)
    assert isinstance(lora_model, nn.Module), f"`lora_model` should be a model, not {type(lora_model).__name__}"
    assert isinstance(lora_optimizer, torch.optim.Optimizer), \
        f"`lora_optimizer` should be a PyTorch optimizer, not {type(lora_optimizer).__name__}"
    for name, value in [("rank", rank), ("trainable_params", trainable_params)]:
        assert isinstance(value, int) and not isinstance(value, bool), \
            f"`{name}` should be a Python int, not {type(value).__name__}"
    wrapped = [m for m in lora_model.modules() if isinstance(m, LinearWithLoRA)]
    assert wrapped, "`lora_model` has no LinearWithLoRA layers: call add_lora on the model"
    inner = {id(m.linear) for m in wrapped}
    bare = [name for name, m in lora_model.named_modules() if isinstance(m, nn.Linear) and id(m) not in inner]
    assert not bare, f"some linear layers have no LoRA ({bare[:3]} ...): add_lora wraps every linear layer"
    assert all(m.lora.A.shape[0] == rank for m in wrapped), "the LoRA layers do not have rank `rank`"
    assert rank == LORA_RANK, "`rank` is not the rank the exercise asks for: reread its list of settings"
    assert all(math.isclose(m.lora.scaling * rank, LORA_ALPHA) for m in wrapped), \
        ("the LoRA layers were not made with the alpha the exercise asks for (each layer scales its update by "
         "alpha / rank): check the alpha you passed to add_lora")
    lora_params = {id(p) for m in wrapped for p in m.lora.parameters()}
    trainable = [p for p in lora_model.parameters() if p.requires_grad]
    assert all(id(p) in lora_params for p in trainable), \
        "parameters outside the LoRA layers are trainable: the pretrained weights should be frozen"
    _assert_gpt2_medium(lora_model)  # its frozen weights are still those of the checkpoint
    assert len(trainable) == len(lora_params), "some LoRA matrices are frozen: they are what should train"
    expected = sum(rank * (m.linear.in_features + m.linear.out_features) for m in wrapped)
    total = sum(p.numel() for p in lora_model.parameters())
    assert trainable_params != total, "`trainable_params` counts all parameters: count only the trainable ones"
    assert trainable_params == expected, \
        "`trainable_params` is not the number of trainable parameters of `lora_model`"
    optimized = {id(p) for group in lora_optimizer.param_groups for p in group["params"]}
    assert lora_params <= optimized, "`lora_optimizer` does not optimize the LoRA matrices of `lora_model`"
    assert type(lora_optimizer) is torch.optim.AdamW, \
        f"`lora_optimizer` is a {type(lora_optimizer).__name__}: the exercise uses the chapter's optimizer, AdamW"
    for setting, expected in [("lr", LEARNING_RATE), ("weight_decay", WEIGHT_DECAY)]:
        assert all(math.isclose(float(group[setting]), expected) for group in lora_optimizer.param_groups), \
            (f"`lora_optimizer`'s {'learning rate' if setting == 'lr' else 'weight decay'} is not the one the "
             "exercise asks for (the chapter's): reread its list of settings")
    assert all(m.lora.B.abs().sum() > 0 for m in wrapped), \
        "the LoRA matrices B are still zero, as add_lora creates them: train the model with `lora_optimizer`"
    print(f"Correct: {trainable_params:,} trainable parameters of {total:,} ({trainable_params / total:.2%}).")
