"""Code from earlier chapters that this bonus folder builds on (copied so the folder works on its own).

A test keeps every definition here identical to its source in ch02/text_data.py, ch03/attention.py,
ch04/gpt.py, ch05/pretraining.py and appendix-A/pytorch_basics.py (the device check).
"""

import sys
import time
from dataclasses import dataclass

import tiktoken
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from download import download

VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
               "ch02/01_main-chapter-code/the-verdict.txt")


VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


def load_verdict(path="the-verdict.txt"):
    """Return the text of Edith Wharton's *The Verdict* (1908), downloading it (or copying it from a mirror)."""
    return download(VERDICT_URL, path, sha256=VERDICT_SHA256).read_text(encoding="utf-8")


class GPTDataset(Dataset):
    """Input/target windows of ``max_length`` tokens; the target is the input shifted one token ahead.

    Windows start every ``stride`` tokens: stride == max_length gives non-overlapping windows, a smaller stride
    gives overlapping ones.
    """

    def __init__(self, text, tokenizer, max_length, stride):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be at least 1, got max_length={max_length}, stride={stride}")
        token_ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
        if len(token_ids) <= max_length:
            raise ValueError(f"the text has {len(token_ids)} tokens; at least max_length + 1 = {max_length + 1} "
                             "are needed for one input/target pair")
        self.inputs, self.targets = [], []
        for start in range(0, len(token_ids) - max_length, stride):
            window = token_ids[start:start + max_length + 1]
            self.inputs.append(torch.tensor(window[:-1]))
            self.targets.append(torch.tensor(window[1:]))

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return self.inputs[index], self.targets[index]


def create_dataloader(text, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True,
                      num_workers=0):
    """Tokenize ``text`` with GPT-2's BPE and serve (inputs, targets) batches of shape (batch_size, max_length)."""
    tokenizer = tiktoken.get_encoding("gpt2")
    dataset = GPTDataset(text, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)


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
    tie_embeddings: bool = False


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
        return self.out_head(x)


def generate_greedy(model, token_ids, max_new_tokens, context_length):
    """Append ``max_new_tokens`` tokens to ``token_ids`` (batch, tokens), each time the most likely next one."""
    for _ in range(max_new_tokens):
        context = token_ids[:, -context_length:]  # crop to what the model can see
        with torch.no_grad():
            logits = model(context)[:, -1, :]  # (batch, vocab_size): the last position predicts the next token
        next_id = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
        token_ids = torch.cat([token_ids, next_id], dim=1)
    return token_ids


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


def text_to_token_ids(text, tokenizer):
    """Encode ``text`` into a (1, tokens) tensor: a batch holding one sequence, as the model expects."""
    return torch.tensor(tokenizer.encode(text, allowed_special={"<|endoftext|>"})).unsqueeze(0)


def token_ids_to_text(token_ids, tokenizer):
    """Decode a (1, tokens) tensor (or a 1-D one) back into text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def create_train_val_loaders(text, context_length, batch_size=2, train_ratio=0.9):
    """Split ``text`` into a training and a validation part and serve both as non-overlapping windows.

    The split is made on characters before tokenizing, so no window spans both parts. Training batches are
    shuffled and incomplete ones are dropped (each step then sees the same number of tokens); validation
    batches keep their order and nothing is dropped.
    """
    split = int(train_ratio * len(text))
    train_loader = create_dataloader(text[:split], batch_size=batch_size, max_length=context_length,
                                     stride=context_length, shuffle=True, drop_last=True)
    val_loader = create_dataloader(text[split:], batch_size=batch_size, max_length=context_length,
                                   stride=context_length, shuffle=False, drop_last=False)
    return train_loader, val_loader


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


def evaluate(model, train_loader, val_loader, device, num_batches):
    """Training and validation loss on ``num_batches`` batches each, with dropout off and no gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = loader_loss(train_loader, model, device, num_batches)
        val_loss = loader_loss(val_loader, model, device, num_batches)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    """Print the model's greedy continuation of ``start_context`` on one line (a quick look during training)."""
    model.eval()
    prompt = text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate_greedy(model, prompt, max_new_tokens, model.cfg.context_length)
    model.train()
    tqdm.write(token_ids_to_text(token_ids, tokenizer).replace("\n", " "))


def train(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
          start_context, tokenizer, sample_tokens=50):
    """Train for ``num_epochs`` passes over ``train_loader``; return the evaluation history.

    After the first optimizer step and then every ``eval_freq`` steps (steps 1, 1 + eval_freq, ...) the training
    and validation losses are measured on ``eval_iter`` batches; after every epoch the model continues
    ``start_context`` so progress can be read, not just measured. The history lists, for each evaluation, the
    step, the (fractional) epoch, the number of training tokens seen so far and both losses.
    """
    history = {"step": [], "epoch": [], "tokens_seen": [], "train_loss": [], "val_loss": []}
    tokens_seen, step = 0, 0
    start = time.perf_counter()
    # a plain-text bar on stdout, where the messages go too: in a notebook one stream keeps them in order
    progress = tqdm(total=num_epochs * len(train_loader), desc="training", unit="step", file=sys.stdout)
    model.train()
    for epoch in range(num_epochs):
        for i, (input_batch, target_batch) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = batch_loss(input_batch, target_batch, model, device)
            loss.backward()  # gradients of the loss with respect to every parameter
            optimizer.step()
            tokens_seen += input_batch.numel()
            step += 1
            progress.update()
            if (step - 1) % eval_freq == 0:
                train_loss, val_loss = evaluate(model, train_loader, val_loader, device, eval_iter)
                record = {"step": step, "epoch": epoch + (i + 1) / len(train_loader), "tokens_seen": tokens_seen,
                          "train_loss": train_loss, "val_loss": val_loss}
                for key, value in record.items():
                    history[key].append(value)
                tqdm.write(f"epoch {epoch + 1} (step {step:4d}): train loss {train_loss:.3f}, "
                           f"val loss {val_loss:.3f}, {time.perf_counter() - start:.0f} s")
        generate_and_print_sample(model, tokenizer, device, start_context, sample_tokens)
    progress.close()
    print(f"Training took {(time.perf_counter() - start) / 60:.2f} min.")
    return history
