"""Greedy generation with a key/value cache, for chapter 4's GPTModel as it is (same modules, same weights).

Without a cache, every new token runs the model over the whole sequence again, although the keys and values of
all earlier tokens are exactly what they were in the previous step: attention is causal, so a token's keys and
values depend only on the tokens up to it. The cache stores them; each step then processes only the one new
token, whose query attends to the cached keys and values. Step t costs O(t) instead of O(t^2) for attention and
O(1) instead of O(t) for every linear layer, so generating n tokens costs O(n^2) instead of O(n^3) in attention
and O(n) instead of O(n^2) in the linear layers.

``benchmark.py`` measures the difference.
"""

import torch
import torch.nn as nn


class KVCache:
    """Keys and values of every block for up to ``cfg.context_length`` tokens, allocated once.

    ``keys[i]`` and ``values[i]`` belong to block i and have shape (batch, heads, context_length, head_dim);
    the first ``length`` positions are filled.
    """

    def __init__(self, cfg, batch_size, device=None, dtype=torch.float32):
        shape = (cfg.n_layers, batch_size, cfg.n_heads, cfg.context_length, cfg.emb_dim // cfg.n_heads)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0


def cached_attention(att, x, keys, values, start):
    """Chapter 3's MultiHeadAttention ``att`` for the new tokens ``x`` at positions start, start+1, ...

    The new tokens' keys and values are written into the block's cache tensors ``keys`` and ``values``
    (batch, heads, context_length, head_dim); the new queries attend to all cached positions up to their own.
    """
    batch, num_new, _ = x.shape
    end = start + num_new

    def split_heads(t):  # (batch, new tokens, d_out) -> (batch, heads, new tokens, head_dim)
        return t.view(batch, num_new, att.num_heads, att.head_dim).transpose(1, 2)

    queries = split_heads(att.W_query(x))
    keys[:, :, start:end] = split_heads(att.W_key(x))
    values[:, :, start:end] = split_heads(att.W_value(x))
    mask = None if num_new == 1 else ~att.mask[start:end, :end]  # True where attention is allowed
    context = nn.functional.scaled_dot_product_attention(
        queries, keys[:, :, :end], values[:, :, :end], attn_mask=mask,
        dropout_p=att.dropout.p if att.training else 0.0)  # (batch, heads, new tokens, head_dim)
    context = context.transpose(1, 2)  # (batch, new tokens, heads, head_dim)
    return att.out_proj(context.reshape(batch, num_new, att.num_heads * att.head_dim))


def forward_with_cache(model, new_ids, cache):
    """GPTModel's forward pass for ``new_ids`` (batch, new tokens), continuing the tokens already in ``cache``.

    Returns the logits of the new positions, (batch, new tokens, vocab_size), and advances ``cache.length``.
    """
    batch, num_new = new_ids.shape
    start, end = cache.length, cache.length + num_new
    if batch != cache.keys.shape[1]:
        raise ValueError(f"the cache was made for a batch of {cache.keys.shape[1]}, the input has {batch}")
    if end > model.cfg.context_length:
        raise ValueError(f"{cache.length} cached + {num_new} new tokens exceed the context length "
                         f"{model.cfg.context_length}")
    positions = torch.arange(start, end, device=new_ids.device)
    x = model.drop_emb(model.tok_emb(new_ids) + model.pos_emb(positions))  # (batch, new tokens, emb_dim)
    for block, keys, values in zip(model.trf_blocks, cache.keys, cache.values):
        x = x + block.drop_shortcut(cached_attention(block.att, block.norm1(x), keys, values, start))
        x = x + block.drop_shortcut(block.ff(block.norm2(x)))
    cache.length = end
    return model.out_head(model.final_norm(x))


def generate_greedy_cached(model, token_ids, max_new_tokens, context_length):
    """The same tokens as ``generate_greedy``, computing every token's keys and values only once.

    The first step processes the (cropped) prompt; later steps process only the token just generated. Once the
    sequence outgrows ``context_length``, the window slides and every token moves to a new position, so the cached
    keys and values no longer apply: from then on each step recomputes the window, exactly as without a cache.
    """
    cache = KVCache(model.cfg, token_ids.shape[0], device=token_ids.device, dtype=model.tok_emb.weight.dtype)
    new_ids = token_ids[:, -context_length:]
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if cache.length + new_ids.shape[1] > context_length:
                cache.length = 0
                new_ids = token_ids[:, -context_length:]
            logits = forward_with_cache(model, new_ids, cache)[:, -1, :]  # (batch, vocab_size)
            new_ids = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
            token_ids = torch.cat([token_ids, new_ids], dim=1)
    return token_ids

