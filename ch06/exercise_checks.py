"""Automatic feedback for the chapter 6 exercises (exercises.ipynb).

Each check recomputes the expected result its own way, prints a short confirmation of what it verified when the
answer is right and raises AssertionError with a hint (never the answer) when it is wrong or still missing. The
checks look at the learner's code and model (lengths, padding and order of the batches, which parameters the
optimizer updated, which position is read), not at accuracies.
"""

import pandas as pd
import tiktoken
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from gpt_download import default_models_dir
from previous_chapters import GPTConfig, GPTModel

GPT2_CONTEXT_LENGTH = GPTConfig().context_length  # 1,024
END_OF_TEXT = 50256


def _require(**answers):
    for name, answer in answers.items():
        assert answer is not None, f"`{name}` is still None: fill in the answer cell above and run it."


def check_exercise_6_1(train_dataset_full, val_dataset_full, train_loader_full, data_folder="sms_spam"):
    """Messages padded to GPT-2's full context length (1,024 tokens) instead of the longest training message."""
    _require(train_dataset_full=train_dataset_full, val_dataset_full=val_dataset_full,
             train_loader_full=train_loader_full)
    tokenizer = tiktoken.get_encoding("gpt2")
    for dataset, name, split in [(train_dataset_full, "train_dataset_full", "train"),
                                 (val_dataset_full, "val_dataset_full", "validation")]:
        assert isinstance(dataset, Dataset), \
            f"`{name}` should be a Dataset of (token ids, label) pairs, like the chapter's SpamDataset"
        texts = pd.read_csv(f"{data_folder}/{split}.csv", dtype=str, keep_default_na=False)["Text"]
        assert len(dataset) == len(texts), \
            f"`{name}` should hold every message of {data_folder}/{split}.csv ({len(texts):,}), not {len(dataset):,}"
        first, _ = dataset[0]
        assert tuple(first.shape) == (GPT2_CONTEXT_LENGTH,), \
            (f"the messages of `{name}` are {tuple(first.shape)[-1]} tokens long: pad them to the model's context "
             f"length, {GPT2_CONTEXT_LENGTH} tokens (SpamDataset's `max_length` is the padded length; GPTConfig "
             "holds GPT-2's)")
        for index in (0, len(texts) // 2, len(texts) - 1):
            got = dataset[index][0].tolist()
            ids = tokenizer.encode(texts[index])[:GPT2_CONTEXT_LENGTH]
            assert got[:len(ids)] == ids, \
                f"`{name}`[{index}] does not begin with the message's token ids: encode with GPT-2's tokenizer"
            assert got == ids + [END_OF_TEXT] * (GPT2_CONTEXT_LENGTH - len(ids)), \
                f"`{name}`[{index}] is not padded with <|endoftext|> ({END_OF_TEXT}) up to {GPT2_CONTEXT_LENGTH} tokens"
    assert isinstance(train_loader_full, DataLoader), \
        f"`train_loader_full` should be a DataLoader, not {type(train_loader_full).__name__}"
    assert train_loader_full.dataset is train_dataset_full, \
        "`train_loader_full` should serve the messages of `train_dataset_full`"
    with torch.random.fork_rng(devices=[]):  # drawing a shuffled batch leaves the learner's random state alone
        inputs, labels = (torch.as_tensor(t) for t in next(iter(train_loader_full)))
    assert tuple(inputs.shape) == (8, GPT2_CONTEXT_LENGTH) and tuple(labels.shape) == (8,), \
        (f"a batch of `train_loader_full` has the shapes {tuple(inputs.shape)} and {tuple(labels.shape)}; expected "
         f"(8, {GPT2_CONTEXT_LENGTH}) and (8,): batches of 8 messages from `train_dataset_full`")
    in_file_order = torch.stack([torch.as_tensor(train_dataset_full[i][0]) for i in range(8)])
    assert not torch.equal(inputs, in_file_order), \
        ("`train_loader_full` serves the messages in the order of the file: a training loader should draw them in a "
         "new random order every epoch, like the chapter's")
    assert len(train_loader_full) == len(train_dataset_full) // 8, \
        "`train_loader_full` should drop its last, incomplete batch, like the chapter's training loader"
    print(f"Correct: every message is now {GPT2_CONTEXT_LENGTH:,} tokens long, most of them padding.")


def _pretrained_gpt2_tensors(keys):
    """A few tensors of GPT-2 124M as load_gpt2("124M") downloaded them (read one by one: no second model)."""
    path = default_models_dir() / "124M" / "model.safetensors"
    assert path.is_file(), f"there is no {path.as_posix()}: load the model with load_gpt2('124M')"
    with safe_open(path, framework="pt") as checkpoint:
        return {key: checkpoint.get_tensor(key) for key in keys}


def check_exercise_6_2(model_all, optimizer_all):
    """GPT-2 124M with a two-class head, every parameter trained for one epoch."""
    _require(model_all=model_all, optimizer_all=optimizer_all)
    assert isinstance(model_all, GPTModel), \
        f"`model_all` should be the GPTModel that load_gpt2 returns, not {type(model_all).__name__}"
    assert isinstance(optimizer_all, torch.optim.Optimizer), \
        f"`optimizer_all` should be a torch optimizer (AdamW), not {type(optimizer_all).__name__}"
    head = model_all.out_head
    assert isinstance(head, torch.nn.Linear) and head.out_features == 2, \
        "`model_all` still has the language-model head: replace `out_head` by a Linear(emb_dim, 2), as in 6.5"
    frozen = [name for name, p in model_all.named_parameters() if not p.requires_grad]
    assert not frozen, \
        (f"{len(frozen)} parameters of `model_all` are still frozen (e.g. {', '.join(frozen[:3])}): finetuning the "
         "whole model means requires_grad=True for every parameter")
    optimized = {id(p) for group in optimizer_all.param_groups for p in group["params"]}
    left_out = [name for name, p in model_all.named_parameters() if id(p) not in optimized]
    assert not left_out, \
        (f"`optimizer_all` does not update {len(left_out)} parameters of `model_all` (e.g. {', '.join(left_out[:3])}): "
         "create the optimizer after unfreezing, with every trainable parameter")
    pretrained = _pretrained_gpt2_tensors(["wte.weight", "h.0.ln_1.weight"])
    for key, tensor in [("wte.weight", model_all.tok_emb.weight),
                        ("h.0.ln_1.weight", model_all.trf_blocks[0].norm1.scale)]:
        assert tensor.shape == pretrained[key].shape, \
            f"`model_all` is not GPT-2 124M (its {key} has another shape): load it with load_gpt2('124M')"
        assert not torch.equal(tensor.detach().cpu(), pretrained[key]), \
            (f"`model_all`'s {key} still holds the pretrained values: train the model (one epoch of train_classifier "
             "with `optimizer_all`) after unfreezing it")
    not_updated = [name for name, p in model_all.named_parameters() if not optimizer_all.state.get(p)]
    assert not not_updated, \
        (f"`optimizer_all` never updated {len(not_updated)} of the model's parameter tensors (e.g. "
         f"{', '.join(not_updated[:3])}): train the model with `optimizer_all`, every parameter unfrozen from the "
         "first step on")
    trained = sum(p.numel() for p in model_all.parameters())
    print(f"Correct: `optimizer_all` updated all {trained:,} parameters of the model, and they moved away from the "
          "pretrained weights.")


def check_exercise_6_3(first_token_logits):
    """A function that reads the class scores at the first position instead of the last."""
    _require(first_token_logits=first_token_logits)
    with torch.random.fork_rng(devices=[]):  # the learner's random state stays as it was
        torch.manual_seed(123)
        model = GPTModel(GPTConfig(context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)).eval()
        model.out_head = torch.nn.Linear(16, 2)
        input_batch = torch.randint(0, 50257, (3, 7))
    with torch.no_grad():
        outputs = model(input_batch)  # (3, 7, 2)
        got = first_token_logits(model, input_batch)
    assert isinstance(got, torch.Tensor) and tuple(got.shape) == (3, 2), \
        (f"`first_token_logits` should return one row of 2 class scores per message, shape (3, 2) for a batch of 3; "
         f"got {tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
    got = got.detach().float()
    assert not torch.allclose(got, outputs[:, -1, :]), \
        ("`first_token_logits` returns the scores of the last position, which has seen the whole message: which "
         "position has seen only the first token?")
    assert torch.allclose(got, outputs[:, 0, :]), \
        ("`first_token_logits` does not return the first position's scores. The model gives scores for every "
         "position, (batch, tokens, classes): keep every message and both classes, and pick one position")
    print("Correct: these scores come from the first position, which has seen only the first token.")
