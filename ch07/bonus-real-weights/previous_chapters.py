"""Code from earlier chapters that this folder uses (copied so the folder works on its own).

A test keeps every definition here identical to its source: chapter 7's instruction data, prompt format, collate
function, response extraction and saving from ch07/instruction_finetuning.py, and the device choice and the loss
from ch05/pretraining.py, with the device check from appendix-A/pytorch_basics.py.
"""

import json
import os
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from download import download

INSTRUCTION_DATA_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                        "ch07/01_main-chapter-code/instruction-data.json")
INSTRUCTION_DATA_SHA256 = "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"
ENTRY_KEYS = ("instruction", "input", "output")
END_OF_TEXT_ID = 50256  # GPT-2's <|endoftext|> token, used to end every example and to pad batches
IGNORE_INDEX = -100  # the target value PyTorch's cross_entropy skips (its default ignore_index)


class InstructionDataError(ValueError):
    """The instruction data is not a list of entries with text under each required key."""


def validate_entries(entries, keys=ENTRY_KEYS, source="instruction data"):
    """Check that ``entries`` is a list of JSON objects with a string under each of ``keys``; return it.

    The first problem found raises an InstructionDataError that names ``source``, the entry's index and the key.
    """
    if not isinstance(entries, list):
        raise InstructionDataError(f"{source}: expected a list of entries, got {type(entries).__name__}")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InstructionDataError(f"{source}: entry {index} is {type(entry).__name__}, not an object with "
                                       f"the keys {', '.join(keys)}")
        for key in keys:
            if key not in entry:
                raise InstructionDataError(f"{source}: entry {index} has no '{key}' key")
            if not isinstance(entry[key], str):
                raise InstructionDataError(f"{source}: entry {index}, key '{key}': expected a string, got "
                                           f"{type(entry[key]).__name__}")
    return entries


def read_entries(path, keys=ENTRY_KEYS):
    """Read a JSON file holding a list of entries and check each one with ``validate_entries``."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InstructionDataError(f"{path} is not valid JSON: {e}") from e
    return validate_entries(entries, keys, source=str(path))


def load_instruction_data(path="instruction-data.json"):
    """The 1,100 entries of the instruction data set, downloaded (or copied from a mirror) and checked."""
    return read_entries(download(INSTRUCTION_DATA_URL, path, sha256=INSTRUCTION_DATA_SHA256))


def split_data(entries, train_percent=85, test_percent=10):
    """Split ``entries`` in file order into (train, test, validation); validation gets the rest.

    With the 1,100 entries of the instruction data set this gives 935, 110 and 55 entries, as in the book.
    """
    train_end = len(entries) * train_percent // 100
    test_end = train_end + len(entries) * test_percent // 100
    return entries[:train_end], entries[train_end:test_end], entries[test_end:]


def format_input(entry):
    """The instruction (and the input, if the entry has one) in the prompt style of Stanford Alpaca."""
    text = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            f"request.\n\n### Instruction:\n{entry['instruction']}")
    if entry["input"]:
        text += f"\n\n### Input:\n{entry['input']}"
    return text


def format_prompt(entry):
    """What the model is given to answer: the formatted input followed by the response header."""
    return format_input(entry) + "\n\n### Response:\n"


class InstructionDataset(Dataset):
    """Each entry as the token ids of its prompt followed by its answer (tokenized once, up front)."""

    def __init__(self, entries, tokenizer):
        self.encoded = [tokenizer.encode(format_prompt(entry) + entry["output"]) for entry in entries]

    def __len__(self):
        return len(self.encoded)

    def __getitem__(self, index):
        return self.encoded[index]


def collate(batch, pad_token_id=END_OF_TEXT_ID, ignore_index=IGNORE_INDEX, allowed_max_length=None, device="cpu"):
    """Turn a list of token-id lists into (inputs, targets) tensors of shape (batch, tokens).

    Every sequence is padded with ``pad_token_id`` to the longest one plus one token, so each ends with at least
    one end-of-text token. The targets are the inputs shifted one position ahead. In the targets, every padding
    token after the first is replaced by ``ignore_index``, which the loss skips: the model learns to produce one
    end-of-text token after its answer and is not trained on the padding. ``allowed_max_length`` cuts longer
    sequences to that many tokens.
    """
    longest = max(len(ids) for ids in batch) + 1
    inputs, targets = [], []
    for ids in batch:
        padded = ids + [pad_token_id] * (longest - len(ids))
        target = torch.tensor(padded[1:])
        target[len(ids):] = ignore_index  # target[len(ids) - 1] is the first padding token: it stays
        inputs.append(torch.tensor(padded[:-1]))
        targets.append(target)
    inputs, targets = torch.stack(inputs), torch.stack(targets)  # (batch, longest - 1) each
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs.to(device), targets.to(device)


def extract_response(token_ids, prompt_length, tokenizer, eos_id=END_OF_TEXT_ID):
    """The text the model wrote after its prompt: the tokens after ``prompt_length`` up to the first ``eos_id``."""
    new_ids = token_ids.squeeze(0)[prompt_length:].tolist()
    if eos_id in new_ids:
        new_ids = new_ids[:new_ids.index(eos_id)]
    return tokenizer.decode(new_ids).strip()


def save_json(data, path):
    """Write ``data`` as indented JSON to ``path`` via a temporary file, so no half-written file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4)
        os.chmod(tmp_name, 0o644)  # mkstemp makes owner-only files
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def computes_like_cpu(device, tolerance=1e-3):
    """Whether ``device`` computes a tiny GPT-style forward and backward pass the way the CPU does.

    Some versions of PyTorch and macOS give silently wrong numbers on Apple's MPS backend (readers of the book
    reported chapter-5 losses stuck near 6 and chapter-7 losses of 19.9 instead of 3.8). One causal self-attention
    block with a feed-forward part and a cross-entropy loss that ignores some targets runs on both devices; the
    loss and every gradient must agree to ``tolerance`` (relative to the largest CPU value). If they do not, or
    the device fails, the reason is printed and the answer is False.
    """
    generator = torch.Generator().manual_seed(123)
    vocab, tokens, dim = 50, 8, 16
    shapes = {"embedding": (vocab, dim), "qkv": (dim, 3 * dim), "up": (dim, 4 * dim), "down": (4 * dim, dim)}
    weights = {name: 0.3 * torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    ids = torch.randint(vocab, (2, tokens), generator=generator)
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -2:] = -100  # ignored by the loss, like the padding of chapter 7
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)

    def loss_and_gradients(where):
        params = {name: w.detach().to(where).requires_grad_() for name, w in weights.items()}  # fresh leaves
        x = params["embedding"][ids.to(where)]
        queries, keys, values = (torch.layer_norm(x, (dim,)) @ params["qkv"]).chunk(3, dim=-1)
        scores = (queries @ keys.transpose(1, 2) / dim**0.5).masked_fill(future.to(where), -torch.inf)
        x = x + torch.softmax(scores, dim=-1) @ values
        hidden = torch.nn.functional.gelu(torch.layer_norm(x, (dim,)) @ params["up"], approximate="tanh")
        x = x + hidden @ params["down"]
        logits = torch.layer_norm(x, (dim,)) @ params["embedding"].T
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.to(where).flatten())
        loss.backward()
        return [loss.detach().to("cpu")] + [p.grad.to("cpu") for p in params.values()]

    try:
        expected, found = loss_and_gradients(torch.device("cpu")), loss_and_gradients(device)
    except (RuntimeError, NotImplementedError) as error:
        print(f"{device} failed a small test computation ({error}); using the CPU instead.")
        return False
    worst = max(((f - e).abs().max() / e.abs().max()).item() for e, f in zip(expected, found))
    if not worst <= tolerance:  # also catches NaN
        print(f"{device} computed a small test differently from the CPU (relative difference {worst:.2g}, allowed "
              f"{tolerance:g}): using the CPU so that losses are right. See setup/gpu-and-cloud.md.")
        return False
    return True


def choose_device():
    """The fastest device available: a CUDA GPU, then Apple's MPS if it computes like the CPU, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available() and computes_like_cpu(torch.device("mps")):
        return torch.device("mps")
    return torch.device("cpu")


def batch_loss(input_batch, target_batch, model, device):
    """Mean cross-entropy of the model's next-token predictions over every position of a batch."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (batch, tokens, vocab_size)
    # cross_entropy wants (N, classes) scores and N class indices: merge the batch and token dimensions.
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def loader_loss(data_loader, model, device, num_batches=None):
    """Average batch loss over the first ``num_batches`` batches of ``data_loader`` (all of them by default)."""
    if len(data_loader) == 0:
        raise ValueError("the data loader has no batches: the text is too short for its context length and "
                         "batch size")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i == num_batches:
            break
        total += batch_loss(input_batch, target_batch, model, device).item()
    return total / num_batches
