"""Chapter 6: finetuning a pretrained GPT model to classify text (SMS spam or not).

Everything the chapter builds: the SMS Spam Collection downloaded, checked, balanced and split into CSV files; a
Dataset that turns messages into token ids of one common length; the pretrained model turned into a classifier
(a new two-class output head, most of the model frozen); the loss and accuracy computed from one position's
outputs; a training loop with periodic evaluation; plots; ``classify_text`` for new messages; and saving and
loading a finetuned classifier.

The notebook ch06.ipynb develops this code step by step (a test keeps the two identical); gpt_class_finetune.py
is the command-line front end.
"""

import hashlib
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from download import download, sha256_of
from previous_chapters import GPTConfig, GPTModel

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
# sha256 of the extracted member. The zip UCI serves also holds a readme and differs from other copies of the
# collection byte for byte, so the data inside it is what is verified.
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
LABELS = {"ham": 0, "spam": 1}  # label in the collection -> class index
CLASS_NAMES = ["not spam", "spam"]  # class index -> what classify_text returns
SPLITS = ["train", "validation", "test"]
PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|> token, used to fill short messages up
TOKEN_CHOICES = ["last", "first", "mean"]


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


def create_data_loaders(train_dataset, val_dataset, test_dataset, batch_size=8, seed=123):
    """Loaders for the three splits: training shuffled (seeded) without its last, incomplete batch; the others
    in order and complete."""
    train_loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(val_dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    test_loader = DataLoader(test_dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    return train_loader, val_loader, test_loader


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


def pool_outputs(outputs, input_batch, token="last", pad_token_id=PAD_TOKEN_ID):
    """Reduce the model's outputs for every position (batch, tokens, classes) to one row per message.

    ``"last"``: the last position, the only one whose causal attention has seen every token; ``"first"``: the
    first position, which has seen only the first token; ``"mean"``: the average over the positions that are not
    padding.
    """
    if token == "last":
        return outputs[:, -1, :]
    if token == "first":
        return outputs[:, 0, :]
    if token == "mean":
        real = (input_batch != pad_token_id).unsqueeze(-1).to(outputs.dtype)  # (batch, tokens, 1)
        return (outputs * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown token choice {token!r}; choose one of {', '.join(TOKEN_CHOICES)}")


def classification_logits(model, input_batch, token="last"):
    """Class scores (batch, num_classes) for a batch of token ids, read at the position(s) ``token`` names."""
    return pool_outputs(model(input_batch), input_batch, token)


def batch_loss(input_batch, target_batch, model, device, token="last"):
    """Mean cross-entropy of the class scores of a batch against its labels."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = classification_logits(model, input_batch, token)  # (batch, num_classes)
    return nn.functional.cross_entropy(logits, target_batch)


def loader_loss(data_loader, model, device, num_batches=None, token="last"):
    """Average batch loss over the first ``num_batches`` batches of ``data_loader`` (all of them by default)."""
    if len(data_loader) == 0:
        raise ValueError("the data loader has no batches")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i == num_batches:
            break
        total += batch_loss(input_batch, target_batch, model, device, token).item()
    return total / num_batches


def loader_accuracy(data_loader, model, device, num_batches=None, token="last"):
    """Fraction of the messages in the first ``num_batches`` batches (all by default) whose class is predicted right."""
    if len(data_loader) == 0:
        raise ValueError("the data loader has no batches")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    correct, seen = 0, 0
    with torch.no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i == num_batches:
                break
            predicted = classification_logits(model, input_batch.to(device), token).argmax(dim=-1)  # (batch,)
            correct += (predicted == target_batch.to(device)).sum().item()
            seen += len(target_batch)
    return correct / seen


def evaluate(model, train_loader, val_loader, device, num_batches, token="last"):
    """Training and validation loss on ``num_batches`` batches each, with dropout off and no gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = loader_loss(train_loader, model, device, num_batches, token)
        val_loss = loader_loss(val_loader, model, device, num_batches, token)
    model.train()
    return train_loss, val_loss


def train_classifier(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                     token="last"):
    """Train for ``num_epochs`` passes over ``train_loader``; return the history of evaluations and epochs.

    After the first optimizer step and then every ``eval_freq`` steps, the training and validation losses are
    measured on ``eval_iter`` batches; after every epoch, the accuracies on ``eval_iter`` batches. The history
    holds two tables (dicts of lists): ``"evaluations"`` (step, epoch, examples seen, both losses) and
    ``"epochs"`` (epoch, examples seen, both accuracies).
    """
    history = {"evaluations": {"step": [], "epoch": [], "examples_seen": [], "train_loss": [], "val_loss": []},
               "epochs": {"epoch": [], "examples_seen": [], "train_accuracy": [], "val_accuracy": []}}
    examples_seen, step = 0, 0
    start = time.perf_counter()
    # a plain-text bar on stdout, where the messages go too: in a notebook one stream keeps them in order
    progress = tqdm(total=num_epochs * len(train_loader), desc="training", unit="step", file=sys.stdout)
    for epoch in range(num_epochs):
        model.train()
        for i, (input_batch, target_batch) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = batch_loss(input_batch, target_batch, model, device, token)
            loss.backward()
            optimizer.step()
            examples_seen += len(target_batch)
            step += 1
            progress.update()
            if (step - 1) % eval_freq == 0:
                train_loss, val_loss = evaluate(model, train_loader, val_loader, device, eval_iter, token)
                record = {"step": step, "epoch": epoch + (i + 1) / len(train_loader), "examples_seen": examples_seen,
                          "train_loss": train_loss, "val_loss": val_loss}
                for key, value in record.items():
                    history["evaluations"][key].append(value)
                tqdm.write(f"epoch {epoch + 1} (step {step:4d}): train loss {train_loss:.3f}, "
                           f"val loss {val_loss:.3f}, {time.perf_counter() - start:.0f} s")
        model.eval()
        train_accuracy = loader_accuracy(train_loader, model, device, eval_iter, token)
        val_accuracy = loader_accuracy(val_loader, model, device, eval_iter, token)
        record = {"epoch": epoch + 1, "examples_seen": examples_seen, "train_accuracy": train_accuracy,
                  "val_accuracy": val_accuracy}
        for key, value in record.items():
            history["epochs"][key].append(value)
        tqdm.write(f"epoch {epoch + 1}: training accuracy {train_accuracy:.1%}, "
                   f"validation accuracy {val_accuracy:.1%}")
    progress.close()
    model.eval()
    print(f"Training took {(time.perf_counter() - start) / 60:.2f} min.")
    return history


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


def classify_text(text, model, tokenizer, device, max_length, token="last", pad_token_id=PAD_TOKEN_ID):
    """Return "spam" or "not spam" for one message, prepared exactly as the training messages were.

    The message is cut to ``max_length`` tokens (and to the model's context length) and filled up to that length
    with ``pad_token_id``.
    """
    length = min(max_length, model.cfg.context_length)
    ids = tokenizer.encode(text)[:length]
    ids = ids + [pad_token_id] * (length - len(ids))
    input_batch = torch.tensor([ids], device=device)  # (1, length)
    with torch.no_grad():
        logits = classification_logits(model, input_batch, token)  # (1, num_classes)
    return CLASS_NAMES[logits.argmax(dim=-1).item()]


def save_classifier(path, model, max_length, token="last"):
    """Save a finetuned classifier with what using it needs: its configuration, input length and token choice."""
    checkpoint = {"config": asdict(model.cfg), "num_classes": model.out_head.out_features, "max_length": max_length,
                  "token": token, "model": model.state_dict()}
    replace_atomically(path, lambda partial: torch.save(checkpoint, partial))


def load_classifier(path, device="cpu"):
    """Load a file written by ``save_classifier``; return (model in eval mode on ``device``, max_length, token)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    required = {"config", "num_classes", "max_length", "token", "model"}
    if not isinstance(checkpoint, dict) or not required <= checkpoint.keys():
        raise ValueError(f"{path} is not a classifier written by save_classifier (it needs the entries "
                         f"{', '.join(sorted(required))})")
    model = GPTModel(GPTConfig(**checkpoint["config"]))
    model.out_head = nn.Linear(model.cfg.emb_dim, checkpoint["num_classes"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint["max_length"], checkpoint["token"]
