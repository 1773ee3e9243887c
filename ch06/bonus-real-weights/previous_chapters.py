"""Code from earlier chapters that this bonus builds on (copied so this folder works on its own).

A test keeps every definition here identical to its source: ``choose_device`` from ch05/pretraining.py (with its check
``computes_like_cpu`` from appendix-A/pytorch_basics.py), and the spam
data (download, checks, balanced split, padded dataset), the new classification head and the curve plot from
ch06/classification.py. The Llama model is ``llama.py``, an identical copy of ch05/bonus-gpt-to-llama/llama.py.
"""

import hashlib
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from download import download, sha256_of

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
LABELS = {"ham": 0, "spam": 1}  # label in the collection -> class index
SPLITS = ["train", "validation", "test"]
PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|> token, used to fill short messages up


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


def replace_atomically(path, write):
    """Call ``write(partial_path)`` to fill a temporary file, then rename it to ``path``.

    A failure part-way leaves no half-written ``path`` behind (and no temporary file either).
    """
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def download_sms_spam(folder="sms_spam"):
    """Return the path of the SMS Spam Collection's data file in ``folder``, downloading and unzipping it if needed.

    The zip comes through the course's download helper (a mirror first, then UCI). Its member ``SMSSpamCollection``
    is extracted only if its sha256 is the published one, so a wrong or damaged download leaves no data file behind.
    """
    folder = Path(folder)
    path = folder / SMS_SPAM_MEMBER
    if path.is_file() and sha256_of(path) == SMS_SPAM_SHA256:
        return path
    archive = download(SMS_SPAM_URL, folder / "sms_spam_collection.zip")
    try:
        with zipfile.ZipFile(archive) as zipped:
            data = zipped.read(SMS_SPAM_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{archive} is not the SMS Spam Collection's zip ({e}); delete it and run again") from e
    if hashlib.sha256(data).hexdigest() != SMS_SPAM_SHA256:
        raise ValueError(f"{archive}: its {SMS_SPAM_MEMBER} is not the published file (sha256 differs from "
                         f"{SMS_SPAM_SHA256}); delete the zip and run again")
    replace_atomically(path, lambda partial: partial.write_bytes(data))
    return path


def read_sms_collection(path):
    """Read the collection's ``label<TAB>message`` lines into a DataFrame with the columns Label and Text.

    A line without a tab, or with a label other than ham and spam, raises a ValueError naming the file and line.
    """
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        label, tab, text = line.rstrip("\r").partition("\t")
        if not tab:
            raise ValueError(f"{path}, line {number}: no tab between label and message: {line[:60]!r}")
        if label not in LABELS:
            raise ValueError(f"{path}, line {number}: unknown label {label!r} (expected one of {', '.join(LABELS)})")
        rows.append((label, text))
    if not rows:
        raise ValueError(f"{path} holds no messages")
    return pd.DataFrame(rows, columns=["Label", "Text"])


def balance_classes(df, seed=123):
    """Keep as many messages of every label as the rarest label has, chosen at random (seeded), labels in order."""
    smallest = df["Label"].value_counts().min()
    kept = [group.sample(smallest, random_state=seed) for _, group in df.groupby("Label", sort=True)]
    return pd.concat(kept, ignore_index=True)


def split_dataset(df, train_fraction=0.7, validation_fraction=0.1, seed=123):
    """Shuffle ``df`` (seeded) and cut it into training, validation and test parts; the test part gets the rest."""
    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(shuffled) * train_fraction)
    validation_end = train_end + int(len(shuffled) * validation_fraction)
    return shuffled.iloc[:train_end], shuffled.iloc[train_end:validation_end], shuffled.iloc[validation_end:]


def write_splits(collection_path, folder, seed=123):
    """Balance the collection, label ham 0 and spam 1, split it 70/10/20 and write train/validation/test CSVs.

    The whole file is read and checked before anything is written; each CSV is written atomically. Returns a
    dict mapping each split's name to its CSV path.
    """
    balanced = balance_classes(read_sms_collection(collection_path), seed)
    balanced["Label"] = balanced["Label"].map(LABELS)
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in zip(SPLITS, split_dataset(balanced, seed=seed)):
        paths[name] = Path(folder) / f"{name}.csv"
        replace_atomically(paths[name], lambda partial: part.to_csv(partial, index=False))
    return paths


class SpamDataset(Dataset):
    """The messages of a CSV file (columns Text, Label) as token ids of one common length, with their labels.

    Every message is encoded with ``tokenizer``, cut to ``max_length`` tokens and filled up to that length with
    ``pad_token_id``. Without ``max_length`` the length of the longest message is used, so nothing is cut.
    """

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=PAD_TOKEN_ID):
        data = pd.read_csv(csv_file, dtype=str, keep_default_na=False)  # text as written: a message "NA" stays "NA"
        missing = {"Text", "Label"} - set(data.columns)
        if missing:
            raise ValueError(f"{csv_file} lacks the column(s) {sorted(missing)}")
        if len(data) == 0:
            raise ValueError(f"{csv_file} holds no messages")
        labels = pd.to_numeric(data["Label"], errors="coerce")
        for row, label in enumerate(labels, start=1):
            if label not in (0, 1):
                raise ValueError(f"{csv_file}, data row {row}: label {data['Label'][row - 1]!r} is not 0 or 1")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        encoded = [tokenizer.encode(text) for text in data["Text"]]
        self.max_length = max(len(ids) for ids in encoded) if max_length is None else max_length
        self.encoded = [ids[:self.max_length] + [pad_token_id] * (self.max_length - len(ids)) for ids in encoded]
        self.labels = [int(label) for label in labels]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return torch.tensor(self.encoded[index]), torch.tensor(self.labels[index])


def add_classification_head(model, num_classes=2, trainable_blocks=1):
    """Turn a GPT language model into a classifier (in place) and choose which of its parts train.

    All parameters are frozen; the output head (emb_dim -> vocab_size) is replaced by a new, trainable
    emb_dim -> ``num_classes`` layer; the last ``trainable_blocks`` transformer blocks and the final norm are
    unfrozen. ``trainable_blocks="all"`` trains every parameter, embeddings included.
    """
    n_blocks = len(model.trf_blocks)
    if trainable_blocks != "all" and trainable_blocks not in range(n_blocks + 1):
        raise ValueError(f"trainable_blocks must be 'all' or a number from 0 to {n_blocks} (the model's blocks), "
                         f"got {trainable_blocks!r}")
    model.requires_grad_(trainable_blocks == "all")
    model.out_head = nn.Linear(model.cfg.emb_dim, num_classes, device=model.tok_emb.weight.device)
    if trainable_blocks != "all":
        model.trf_blocks[n_blocks - trainable_blocks:].requires_grad_(True)
        model.final_norm.requires_grad_(True)
    return model


def plot_curves(table, metric, path=None):
    """Plot the training and validation ``metric`` ("loss" or "accuracy") of a history table against epochs
    (bottom axis) and examples seen (top axis)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(table["epoch"], table[f"train_{metric}"], marker=".", label=f"training {metric}")
    ax.plot(table["epoch"], table[f"val_{metric}"], marker=".", linestyle="--", label=f"validation {metric}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend()
    top = ax.twiny()  # a second x-axis sharing the y-axis
    top.plot(table["examples_seen"], table[f"train_{metric}"], alpha=0)  # invisible: only sets the axis range
    top.set_xlabel("examples seen")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
