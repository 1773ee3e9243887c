"""Code from earlier chapters that this bonus folder compares the Llama model with (copied so the folder works alone).

A test keeps every definition here identical to its source in ch03/attention.py, ch04/gpt.py and ch05/pretraining.py.
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


def choose_device():
    """The fastest device available: a CUDA GPU, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
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
