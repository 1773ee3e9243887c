"""Code from earlier chapters that this folder uses (copied so the folder works on its own).

A test keeps every definition here identical to its source: chapter 3's multi-head attention (from
ch04/previous_chapters.py), chapter 4's GPTModel (ch04/gpt.py), chapter 5's checkpoints (ch05/pretraining.py),
chapter 6's SMS spam data, classifier head, loss and classifier files (ch06/classification.py) and chapter 7's
prompt format (ch07/instruction_finetuning.py).
"""

import hashlib
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from download import download, sha256_of


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention computing all heads at once by splitting d_out into num_heads slices."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes the information of the heads
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):  # x: (batch, tokens, d_in)
        batch, num_tokens, _ = x.shape

        def split_heads(t):  # (batch, tokens, d_out) -> (batch, heads, tokens, head_dim)
            return t.view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        queries = split_heads(self.W_query(x))
        keys = split_heads(self.W_key(x))
        values = split_heads(self.W_value(x))
        scores = queries @ keys.transpose(2, 3)  # (batch, heads, tokens, tokens)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = torch.softmax(scores / self.head_dim ** 0.5, dim=-1)
        weights = self.dropout(weights)
        context = (weights @ values).transpose(1, 2)  # (batch, tokens, heads, head_dim)
        context = context.reshape(batch, num_tokens, self.num_heads * self.head_dim)  # (batch, tokens, d_out)
        return self.out_proj(context)


@dataclass(frozen=True)
class GPTConfig:
    """GPT hyperparameters; the defaults have GPT-2 small's sizes (its checkpoints also set the last two flags)."""

    vocab_size: int = 50257  # GPT-2's BPE vocabulary
    context_length: int = 1024  # longest input the position embeddings allow
    emb_dim: int = 768  # width of every token's vector
    n_heads: int = 12  # attention heads per block
    n_layers: int = 12  # transformer blocks
    drop_rate: float = 0.1  # dropout after embeddings, on attention weights and on shortcuts
    qkv_bias: bool = False  # bias terms in the query/key/value projections (GPT-2's checkpoints have them)
    tie_embeddings: bool = False  # output head shares the token-embedding matrix, as in GPT-2


class LayerNorm(nn.Module):
    """Normalise each token's vector to zero mean and unit variance, then apply a learned scale and shift."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps  # keeps the division finite when the variance is 0
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased (divide by n), as GPT-2 does
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):
    """Gaussian error linear unit, in the tanh approximation GPT-2 was trained with."""

    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


class FeedForward(nn.Module):
    """Position-wise MLP: widen each token's vector four times, apply GELU, project back."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + feed_forward(norm(x)), with dropout on each branch."""

    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
                                      dropout=cfg.drop_rate, num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x):  # x: (batch, tokens, emb_dim)
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """Token + position embeddings, a stack of transformer blocks, a final norm and a linear output head."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    def forward(self, in_idx):  # in_idx: (batch, tokens) of token ids
        num_tokens = in_idx.shape[1]
        if num_tokens > self.cfg.context_length:
            raise ValueError(f"input has {num_tokens} tokens; the context length is {self.cfg.context_length}")
        positions = torch.arange(num_tokens, device=in_idx.device)
        x = self.tok_emb(in_idx) + self.pos_emb(positions)  # (batch, tokens, emb_dim)
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)  # (batch, tokens, vocab_size) logits


def save_checkpoint(path, model, optimizer=None):
    """Save the model's configuration and weights, the optimizer's state and the random-number state.

    The random state is the CPU generator's and, on a machine with a CUDA or MPS GPU, also the GPU's: together
    they decide the dropout masks and the order of shuffled batches. The file is written under a temporary name
    and renamed when complete.
    """
    path = Path(path)
    checkpoint = {"config": asdict(model.cfg), "model": model.state_dict(), "rng_state": torch.get_rng_state()}
    if torch.cuda.is_available():
        checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state()  # the current GPU's, the one training uses
    if torch.backends.mps.is_available():
        checkpoint["mps_rng_state"] = torch.mps.get_rng_state()
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    partial = path.with_name(path.name + ".part")
    torch.save(checkpoint, partial)
    partial.replace(path)


def load_checkpoint(path, model=None, optimizer=None, device="cpu", restore_rng=False):
    """Load a file written by ``save_checkpoint`` onto ``device`` and return the model.

    Without ``model`` a new GPTModel is built from the stored configuration. A given model must have the
    stored configuration, otherwise a ValueError names the settings that differ. The model is moved to
    ``device`` *before* ``optimizer`` (built for this model's parameters) gets its stored state back, so that
    PyTorch puts every state tensor on the device of its parameter. ``restore_rng`` restores the random-number
    state (dropout masks and the order of shuffled batches): on a CPU a resumed run is then identical to an
    uninterrupted one; on a GPU its random state is restored too (if it was saved on a machine with one), but GPU
    kernels are not all bit-for-bit deterministic, so losses agree closely rather than exactly.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    if not isinstance(checkpoint, dict) or not {"config", "model", "rng_state"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint (it needs the entries "
                         "'config', 'model' and 'rng_state')")
    config = GPTConfig(**checkpoint["config"])
    if model is None:
        model = GPTModel(config)
    elif model.cfg != config:
        differences = ", ".join(f"{f.name}={getattr(config, f.name)} (the model has {getattr(model.cfg, f.name)})"
                                for f in fields(config) if getattr(config, f.name) != getattr(model.cfg, f.name))
        raise ValueError(f"{path} holds a model with a different configuration: {differences}")
    model.to(device)
    model.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        if "optimizer" not in checkpoint:
            raise ValueError(f"{path} holds no optimizer state (it was saved without an optimizer)")
        optimizer.load_state_dict(checkpoint["optimizer"])  # each state tensor goes to its parameter's device
    if restore_rng:
        torch.set_rng_state(checkpoint["rng_state"])
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
        if "mps_rng_state" in checkpoint and torch.backends.mps.is_available():
            torch.mps.set_rng_state(checkpoint["mps_rng_state"])
    return model


SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"

SMS_SPAM_MEMBER = "SMSSpamCollection"

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


