"""Code from chapter 3 that this bonus folder builds on (copied so the folder works on its own).

A test keeps every definition here identical to its source in ch03/attention.py: CausalAttention,
MultiHeadAttentionWrapper and MultiHeadAttention.
"""

import torch
import torch.nn as nn


class CausalAttention(nn.Module):
    """Batched single-head attention in which each token attends only to itself and earlier tokens."""

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # A buffer moves with the module to the GPU and is saved in its state_dict, but is not trained.
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):  # x: (batch, tokens, d_in)
        num_tokens = x.shape[1]
        queries = self.W_query(x)  # (batch, tokens, d_out)
        keys = self.W_key(x)
        values = self.W_value(x)
        scores = queries @ keys.transpose(1, 2)  # (batch, tokens, tokens)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        weights = self.dropout(weights)
        return weights @ values


class MultiHeadAttentionWrapper(nn.Module):
    """Several independent causal attention heads whose outputs are concatenated: (batch, tokens, heads * d_out)."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)
        )

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


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
