"""Code from earlier chapters that the LoRA bonus builds on (copied so this folder works on its own).

A test keeps every definition here identical to its source: MultiHeadAttention from ch03/attention.py, the model
and the GPT-2 weight mapping from ch04/gpt.py, and the spam data, classifier outputs and training loop from
ch06/classification.py, and the device choice from ch05/pretraining.py with its check from
appendix-A/pytorch_basics.py.
"""

import hashlib
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from download import download, sha256_of

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
LABELS = {"ham": 0, "spam": 1}  # label in the collection -> class index
SPLITS = ["train", "validation", "test"]
PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|> token, used to fill short messages up
TOKEN_CHOICES = ["last", "first", "mean"]


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


def load_gpt2_params(model, params):
    """Copy GPT-2 weights named as in Hugging Face's GPT-2 (``h.0.attn.c_attn.weight``, ...) into ``model``.

    ``params`` maps names to tensors or arrays; a leading ``transformer.`` is ignored. GPT-2 stores its linear
    layers as (in, out) matrices and fuses the query, key and value projections into one ``c_attn``; here they
    are split and transposed into the model's separate (out, in) ``nn.Linear`` weights. Every tensor is checked
    before any is copied: a missing or misshapen one raises an error naming it and leaves the model unchanged.
    """
    params = {name.removeprefix("transformer."): torch.as_tensor(value) for name, value in params.items()}
    cfg = model.cfg
    d = cfg.emb_dim
    copies = []  # (model parameter, new value), applied once everything has been checked

    def take(name, shape):
        if name not in params:
            raise KeyError(f"GPT-2 weights: tensor '{name}' is missing")
        tensor = params[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"GPT-2 weights: tensor '{name}' has shape {tuple(tensor.shape)}, "
                             f"the model (emb_dim={d}, vocab_size={cfg.vocab_size}, "
                             f"context_length={cfg.context_length}) expects {shape}")
        return tensor

    n_checkpoint_layers = len({name.split(".")[1] for name in params if name.startswith("h.")})
    if n_checkpoint_layers != cfg.n_layers:
        raise ValueError(f"GPT-2 weights have {n_checkpoint_layers} blocks, the model has {cfg.n_layers}")

    copies.append((model.tok_emb.weight, take("wte.weight", (cfg.vocab_size, d))))
    copies.append((model.pos_emb.weight, take("wpe.weight", (cfg.context_length, d))))
    for i, block in enumerate(model.trf_blocks):
        prefix = f"h.{i}."
        copies.append((block.norm1.scale, take(prefix + "ln_1.weight", (d,))))
        copies.append((block.norm1.shift, take(prefix + "ln_1.bias", (d,))))
        qkv_weight = take(prefix + "attn.c_attn.weight", (d, 3 * d)).split(d, dim=1)
        qkv_bias = take(prefix + "attn.c_attn.bias", (3 * d,)).split(d)
        for linear, weight, bias in zip((block.att.W_query, block.att.W_key, block.att.W_value), qkv_weight, qkv_bias):
            copies.append((linear.weight, weight.T))
            if linear.bias is not None:
                copies.append((linear.bias, bias))
            elif bias.any():
                raise ValueError(f"GPT-2 weights: '{prefix}attn.c_attn.bias' is non-zero but the model was built "
                                 "with qkv_bias=False; build it with qkv_bias=True")
        copies.append((block.att.out_proj.weight, take(prefix + "attn.c_proj.weight", (d, d)).T))
        copies.append((block.att.out_proj.bias, take(prefix + "attn.c_proj.bias", (d,))))
        copies.append((block.norm2.scale, take(prefix + "ln_2.weight", (d,))))
        copies.append((block.norm2.shift, take(prefix + "ln_2.bias", (d,))))
        copies.append((block.ff.layers[0].weight, take(prefix + "mlp.c_fc.weight", (d, 4 * d)).T))
        copies.append((block.ff.layers[0].bias, take(prefix + "mlp.c_fc.bias", (4 * d,))))
        copies.append((block.ff.layers[2].weight, take(prefix + "mlp.c_proj.weight", (4 * d, d)).T))
        copies.append((block.ff.layers[2].bias, take(prefix + "mlp.c_proj.bias", (d,))))
    copies.append((model.final_norm.scale, take("ln_f.weight", (d,))))
    copies.append((model.final_norm.shift, take("ln_f.bias", (d,))))
    if cfg.tie_embeddings:
        if "lm_head.weight" in params and not torch.equal(params["lm_head.weight"], params["wte.weight"]):
            raise ValueError("GPT-2 weights: 'lm_head.weight' differs from 'wte.weight', but the model shares one "
                             "matrix between them; build it with tie_embeddings=False")
    else:
        # GPT-2's checkpoints have no separate head: it is the token-embedding matrix.
        head = "lm_head.weight" if "lm_head.weight" in params else "wte.weight"
        copies.append((model.out_head.weight, take(head, (cfg.vocab_size, d))))
    with torch.no_grad():
        for parameter, value in copies:
            parameter.copy_(value)
    return model


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
