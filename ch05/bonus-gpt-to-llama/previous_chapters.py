"""Code from earlier chapters that this bonus folder compares the Llama model with (copied so the folder works alone).

A test keeps every definition here identical to its source in ch03/attention.py, ch04/gpt.py, ch05/pretraining.py
and appendix-A/pytorch_basics.py (the device check).
"""

import torch
import torch.nn as nn


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


def generate(model, token_ids, max_new_tokens, context_length, temperature=0.0, top_k=None, eos_id=None):
    """Append up to ``max_new_tokens`` tokens to ``token_ids`` (batch, tokens) and return the longer tensor.

    ``temperature`` 0 picks the most likely token (greedy decoding); a positive temperature divides the logits
    by it and samples from the softmax, so values below 1 sharpen and values above 1 flatten the distribution.
    ``top_k`` keeps only the k most likely tokens as candidates. Once a sequence has produced ``eos_id`` it is
    padded with ``eos_id``; generation stops early when every sequence in the batch has produced it.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    finished = torch.zeros(token_ids.shape[0], 1, dtype=torch.bool, device=token_ids.device)
    for _ in range(max_new_tokens):
        context = token_ids[:, -context_length:]  # crop to what the model can see
        with torch.no_grad():
            logits = model(context)[:, -1, :]  # (batch, vocab_size): scores for the next token
        if top_k is not None:
            kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (batch, 1)
            logits = logits.masked_fill(logits < kth_best, -torch.inf)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)  # (batch, vocab_size)
            next_id = torch.multinomial(probs, num_samples=1)  # (batch, 1)
        else:
            next_id = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
        if eos_id is not None:
            next_id = next_id.masked_fill(finished, eos_id)
            finished = finished | (next_id == eos_id)
        token_ids = torch.cat([token_ids, next_id], dim=1)
        if finished.all():
            break
    return token_ids
