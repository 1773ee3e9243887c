"""Chapter 7's instruction finetuning on real pretrained weights: SmolLM2-135M-Instruct in the course's Llama.

Chapter 7 finetunes GPT-2 medium; here the same data, Alpaca prompt format, collate function (padding plus -100
masking) and loss train SmolLM2-135M-Instruct, loaded from its GGUF file into the from-scratch Llama of
ch05/bonus-gpt-to-llama (llama.py, an identical copy). What is new:

- ``create_loader``: chapter 7's data set and collate function with the Llama tokenizer's end-of-sequence token as
  padding (chapter 7's loader pads with GPT-2's token 50256, which is not even in SmolLM2's vocabulary);
- ``train_last_blocks``: freeze everything but the last transformer blocks and the final norm;
- ``validation_loss`` and ``train``: chapter 5's loss, optionally under bfloat16 autocast, with timing;
- ``answer`` / ``answer_entries``: greedy answers with the Llama's KV cache, stopping at end-of-sequence;
- ``mean_scores``: chapter 7's reference-based metrics (metrics.py, an identical copy) averaged per model.

The notebook instruct-smollm2.ipynb runs it all on the 935 / 110 / 55 split; a test keeps the two identical.
"""

import os
import sys
import time
from functools import partial

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from llama import generate
from metrics import METRICS, score_responses
from previous_chapters import InstructionDataset, batch_loss, collate, extract_response, format_prompt, loader_loss

BOOK_RESPONSES_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                      "ch07/01_main-chapter-code/instruction-data-with-response.json")
BOOK_RESPONSES_SHA256 = "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943"


def create_loader(entries, tokenizer, batch_size=8, shuffle=False, drop_last=False, allowed_max_length=None):
    """Chapter 7's batches of (inputs, targets) for a Llama tokenizer: padded with ``tokenizer.eos_id``.

    The first padding token stays a target, so the model learns to end its answer with end-of-sequence (which is
    where ``answer`` stops); the padding after it is masked with -100.
    """
    collate_fn = partial(collate, pad_token_id=tokenizer.eos_id, allowed_max_length=allowed_max_length)
    return DataLoader(InstructionDataset(entries, tokenizer), batch_size=batch_size, shuffle=shuffle,
                      drop_last=drop_last, collate_fn=collate_fn)


def train_last_blocks(model, num_blocks):
    """Freeze ``model`` except its last ``num_blocks`` transformer blocks and final norm; return those parameters.

    The token embeddings, and with them the tied output head, stay frozen.
    """
    if not 1 <= num_blocks <= len(model.trf_blocks):
        raise ValueError(f"num_blocks must be between 1 and {len(model.trf_blocks)}, got {num_blocks}")
    model.requires_grad_(False)
    for module in [*model.trf_blocks[-num_blocks:], model.final_norm]:
        module.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def model_device(model):
    return next(model.parameters()).device


def autocast(model, bfloat16):
    """A context in which matrix products run in bfloat16 (``bfloat16=True``) or as they are (float32)."""
    return torch.autocast(model_device(model).type, dtype=torch.bfloat16, enabled=bfloat16)


def validation_loss(model, loader, num_batches=None):
    """Chapter 5's mean batch loss over (the first ``num_batches`` batches of) ``loader``, in float32, no gradients."""
    model.eval()
    with torch.no_grad():
        return loader_loss(loader, model, model_device(model), num_batches)


def train(model, train_loader, val_loader, optimizer, num_epochs=1, eval_freq=10, eval_batches=None, bfloat16=True,
          max_steps=None):
    """Finetune for ``num_epochs`` passes (or ``max_steps`` steps) over ``train_loader``; return the history.

    Every ``eval_freq`` steps and after the last one, the history records the step, the mean training loss of the
    steps since the previous record, the validation loss (``eval_batches`` batches, float32), the elapsed seconds
    and the 1-minute load average (the machine may be shared: the time says little without it).
    """
    device = model_device(model)
    total = num_epochs * len(train_loader) if max_steps is None else min(max_steps, num_epochs * len(train_loader))
    history = {"step": [], "train_loss": [], "val_loss": [], "seconds": [], "load": []}
    losses, step, start = [], 0, time.perf_counter()
    progress = tqdm(total=total, desc="finetuning", unit="step", file=sys.stdout)
    for _ in range(num_epochs):
        for input_batch, target_batch in train_loader:
            model.train()
            optimizer.zero_grad()
            with autocast(model, bfloat16):
                loss = batch_loss(input_batch, target_batch, model, device)  # targets -100 are ignored
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            progress.update()
            if step % eval_freq == 0 or step == total:
                record = {"step": step, "train_loss": sum(losses) / len(losses),
                          "val_loss": validation_loss(model, val_loader, eval_batches),
                          "seconds": time.perf_counter() - start, "load": os.getloadavg()[0]}
                for key, value in record.items():
                    history[key].append(value)
                losses = []
                tqdm.write(f"step {step:4d}: train loss {record['train_loss']:.3f}, val loss {record['val_loss']:.3f}, "
                           f"{record['seconds']:.0f} s (load average {record['load']:.1f})", file=sys.stdout)
            if step == total:
                progress.close()
                return history
    progress.close()
    return history


def answer(model, tokenizer, entry, max_new_tokens=100):
    """The model's greedy answer to ``entry`` in the Alpaca prompt format: at most ``max_new_tokens`` tokens."""
    prompt = torch.tensor([tokenizer.encode(format_prompt(entry))], device=model_device(model))  # (1, tokens)
    token_ids = generate(model, prompt, max_new_tokens, eos_id=tokenizer.eos_id)  # KV cache; stops at eos
    return extract_response(token_ids, prompt.shape[1], tokenizer, eos_id=tokenizer.eos_id)


def answer_entries(model, tokenizer, entries, max_new_tokens=100, desc="answering"):
    """Copies of ``entries``, each with the model's answer under ``model_response`` (the book's file format)."""
    model.eval()
    return [{**entry, "model_response": answer(model, tokenizer, entry, max_new_tokens)}
            for entry in tqdm(entries, desc=desc, unit="entry", file=sys.stdout)]


def mean_scores(responses_by_model):
    """{model name: {metric: mean over its entries}} for chapter 7's metrics (ROUGE-L, token F1, exact match)."""
    table = {}
    for name, entries in responses_by_model.items():
        if not entries:
            raise ValueError(f"no responses for '{name}'")
        table[name] = {metric: sum(score_responses(entries, metric)) / len(entries) for metric in METRICS}
    return table
