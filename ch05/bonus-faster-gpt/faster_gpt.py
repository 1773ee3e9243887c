"""A faster GPT-2: the same model as chapter 4, computed with fewer, larger and fused operations.

``FasterGPT`` holds exactly the parameters of chapter 4's ``GPTModel`` (GPT-2's tied output head included), laid
out for speed: one fused query/key/value projection, PyTorch's fused ``scaled_dot_product_attention``, its built-in
LayerNorm and tanh-approximated GELU, dropout masks made from random bits, a sparse gradient for the token
embedding, and a key/value cache written in place for generation. ``from_gpt_model`` copies a chapter model's weights
into it, so weights load as in chapter 5 (``load_gpt2_params``) and the two models can be compared logit by logit.

Four switches (``FasterGPT.set_switches``) turn the kinds of change off one at a time, so the notebook can measure
what each buys: ``sdpa``, ``fused_ops``, ``fast_dropout`` and ``sparse_grad``.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Dropout(nn.Dropout):
    """``nn.Dropout`` (each element zeroed with probability p, the others scaled by 1 / (1 - p)) whose mask is made
    from random bits, which a CPU draws faster than the Bernoulli numbers ``nn.Dropout`` uses. Each int32 from
    ``random_`` holds 31 random bits (0 to 2**31 - 1): its two 16-bit halves, top bit cleared, are two independent
    random numbers from 0 to 32767, one per element. An element is dropped where its number is below p * 32768,
    rounded, so p is used to the nearest 1/32768 (0.1 becomes 3277/32768 = 0.100006); a p that rounds to 0 or to 1
    and ``fast=False`` use ``nn.Dropout``'s own computation."""

    def __init__(self, p, fast=True):
        super().__init__(p)
        self.fast = fast

    def forward(self, x):
        dropped_below = round(self.p * 32768)
        if not (self.fast and self.training and 0 < dropped_below < 32768):
            return super().forward(x)
        words = torch.empty((x.numel() + 1) // 2, dtype=torch.int32, device=x.device).random_()
        numbers = words.view(torch.int16)[:x.numel()].bitwise_and_(0x7FFF).view(x.shape)
        # The kept elements' scale, at least float32 even when x is bfloat16 (as under autocast)
        scale = torch.tensor(32768 / (32768 - dropped_below), dtype=torch.promote_types(x.dtype, torch.float32),
                             device=x.device)
        return (x * torch.where(numbers >= dropped_below, scale, 0.0)).to(x.dtype)


class FasterAttention(nn.Module):
    """Causal multi-head attention with one fused query/key/value projection."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.emb_dim % cfg.n_heads:
            raise ValueError(f"emb_dim ({cfg.emb_dim}) must be divisible by n_heads ({cfg.n_heads})")
        self.n_heads, self.head_dim = cfg.n_heads, cfg.emb_dim // cfg.n_heads
        self.qkv = nn.Linear(cfg.emb_dim, 3 * cfg.emb_dim, bias=cfg.qkv_bias)  # rows: queries, keys, values
        self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)
        self.drop_weights = Dropout(cfg.drop_rate)
        self.sdpa = True

    def forward(self, x, cache=None):  # x: (batch, tokens, emb_dim)
        batch, num_tokens, emb_dim = x.shape
        q, k, v = self.qkv(x).view(batch, num_tokens, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        start = 0
        if cache is not None:  # keys and values of earlier positions are kept; append this call's
            k, v, start = cache.append(k, v)
        dropout = self.drop_weights.p if self.training else 0.0
        if self.sdpa and not (dropout > 0 and self.drop_weights.fast):
            # With a cache the queries sit at positions start, start + 1, ...: each sees every key up to its own (a
            # single new token sees them all, so it needs no mask).
            mask = None if start == 0 or num_tokens == 1 else causal_mask(num_tokens, start, x.device)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                     is_causal=mask is None and num_tokens > 1)
        else:  # chapter 3's steps; the scaling is applied to the queries (a quarter the size of the scores at 256
            # tokens and head size 64)
            scores = (q / self.head_dim ** 0.5) @ k.transpose(2, 3)  # (batch, heads, tokens, keys)
            scores.masked_fill_(~causal_mask(num_tokens, start, x.device), -torch.inf)
            context = self.drop_weights(torch.softmax(scores, dim=-1)) @ v
        return self.out_proj(context.transpose(1, 2).reshape(batch, num_tokens, emb_dim))


def causal_mask(num_queries, start, device):
    """(queries, start + queries) booleans: True where query i (at position start + i) may look at key j."""
    positions = torch.arange(start + num_queries, device=device)
    return positions[None, :] <= positions[start:, None]


class FasterBlock(nn.Module):
    """Chapter 4's pre-LayerNorm transformer block with the faster attention and fused elementwise operations."""

    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.emb_dim), nn.LayerNorm(cfg.emb_dim)
        self.att = FasterAttention(cfg)
        self.fc = nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim)
        self.proj = nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        self.drop_shortcut = Dropout(cfg.drop_rate)
        self.fused_ops = True

    def forward(self, x, cache=None):
        x = x + self.drop_shortcut(self.att(layer_norm(self.norm1, x, self.fused_ops), cache))
        hidden = gelu(self.fc(layer_norm(self.norm2, x, self.fused_ops)), self.fused_ops)
        return x + self.drop_shortcut(self.proj(hidden))


def layer_norm(layer, x, fused):
    """``layer`` (an ``nn.LayerNorm``) applied by PyTorch's single fused kernel, or step by step as in chapter 4."""
    if fused:
        return layer(x)
    mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True, unbiased=False)
    return layer.weight * (x - mean) / torch.sqrt(var + layer.eps) + layer.bias


def gelu(x, fused):
    """GPT-2's tanh-approximated GELU, by PyTorch's fused kernel or step by step as in chapter 4."""
    if fused:
        return F.gelu(x, approximate="tanh")
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


class FasterGPT(nn.Module):
    """Chapter 4's GPT with the faster blocks; the output head is always tied to the token embeddings, as GPT-2's."""

    def __init__(self, cfg, sdpa=True, fused_ops=True, fast_dropout=True, sparse_grad=True):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # its sparse switch: see set_switches
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(FasterBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.emb_dim)
        self.set_switches(sdpa, fused_ops, fast_dropout, sparse_grad)

    def set_switches(self, sdpa, fused_ops, fast_dropout, sparse_grad):
        """Choose, in every block, the attention kernel (``scaled_dot_product_attention`` or chapter 3's steps),
        the LayerNorm and GELU kernels (fused or chapter 4's steps) and how dropout masks are drawn; and whether
        the token embedding's gradient is sparse. The weights stay as they are; returns the model.

        A sparse gradient lists only the rows of the batch's tokens. The tied matrix's gradient is the output
        head's (dense) plus the embedding's: added as a sparse gradient, those rows go into the head's, instead
        of a second vocab_size x emb_dim matrix, mostly zeros, being built and added. ``.grad`` stays dense.
        (DistributedDataParallel expects a sparse gradient from a sparse embedding: use sparse_grad=False there.)"""
        self.fused_ops = fused_ops  # for the final LayerNorm
        self.tok_emb.sparse = sparse_grad
        for block in self.trf_blocks:
            block.att.sdpa, block.fused_ops = sdpa, fused_ops
        for module in self.modules():
            if isinstance(module, Dropout):
                module.fast = fast_dropout
        return self

    def forward(self, in_idx, cache=None):  # in_idx: (batch, tokens); with a cache, the tokens after its contents
        start = 0 if cache is None else cache.length
        end = start + in_idx.shape[1]
        if end > self.cfg.context_length:
            raise ValueError(f"positions up to {end} requested; the context length is {self.cfg.context_length}")
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(torch.arange(start, end, device=in_idx.device)))
        for i, block in enumerate(self.trf_blocks):
            x = block(x, None if cache is None else cache.layer(i))
        if cache is not None:
            cache.length = end
        x = layer_norm(self.final_norm, x, self.fused_ops)
        return F.linear(x, self.tok_emb.weight)  # (batch, tokens, vocab_size) logits


def from_gpt_model(model, sdpa=True, fused_ops=True, fast_dropout=True, sparse_grad=True):
    """A ``FasterGPT`` holding the weights of chapter 4's ``GPTModel`` ``model`` (which must have a tied head), on
    its device and in its dtype. Like any new module it starts in training mode: call ``.eval()`` to generate."""
    cfg = model.cfg
    if not cfg.tie_embeddings:
        raise ValueError("FasterGPT ties its output head to the token embeddings, as GPT-2 does; the given model "
                         "has tie_embeddings=False")
    weight = model.tok_emb.weight
    faster = FasterGPT(cfg, sdpa, fused_ops, fast_dropout, sparse_grad).to(device=weight.device, dtype=weight.dtype)
    state = {"tok_emb.weight": model.tok_emb.weight, "pos_emb.weight": model.pos_emb.weight,
             "final_norm.weight": model.final_norm.scale, "final_norm.bias": model.final_norm.shift}
    for i, block in enumerate(model.trf_blocks):
        att, prefix = block.att, f"trf_blocks.{i}."
        state.update({
            prefix + "norm1.weight": block.norm1.scale, prefix + "norm1.bias": block.norm1.shift,
            prefix + "norm2.weight": block.norm2.scale, prefix + "norm2.bias": block.norm2.shift,
            prefix + "att.qkv.weight": torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight]),
            prefix + "att.out_proj.weight": att.out_proj.weight, prefix + "att.out_proj.bias": att.out_proj.bias,
            prefix + "fc.weight": block.ff.layers[0].weight, prefix + "fc.bias": block.ff.layers[0].bias,
            prefix + "proj.weight": block.ff.layers[2].weight, prefix + "proj.bias": block.ff.layers[2].bias,
        })
        if cfg.qkv_bias:
            state[prefix + "att.qkv.bias"] = torch.cat([att.W_query.bias, att.W_key.bias, att.W_value.bias])
    faster.load_state_dict(state)
    return faster


class InPlaceCache:
    """Keys and values of every block for ``batch`` sequences of up to ``max_tokens`` positions, preallocated, so
    that each generated token writes its keys and values in place instead of concatenating whole tensors."""

    def __init__(self, cfg, batch, max_tokens, device="cpu", dtype=torch.float32):
        shape = (cfg.n_layers, 2, batch, cfg.n_heads, max_tokens, cfg.emb_dim // cfg.n_heads)
        self.store = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def layer(self, i):
        return LayerCache(self, i)


class LayerCache:
    """One block's view of an ``InPlaceCache``."""

    def __init__(self, cache, index):
        self.cache, self.index = cache, index

    def append(self, keys, values):
        """Store keys/values (batch, heads, new, head_dim) after the cached ones; return all of them and where the
        new ones start."""
        start, store = self.cache.length, self.cache.store[self.index]
        end = start + keys.shape[2]
        if end > store.shape[3]:
            raise ValueError(f"the cache holds {store.shape[3]} positions; {end} were requested")
        if keys.shape[0] != store.shape[1]:
            raise ValueError(f"the cache was made for a batch of {store.shape[1]} sequences; got {keys.shape[0]}")
        store[0, :, :, start:end] = keys
        store[1, :, :, start:end] = values
        return store[0, :, :, :end], store[1, :, :, :end], start


@torch.no_grad()
def generate_faster(model, token_ids, max_new_tokens):
    """Greedy generation with the in-place cache: the prompt in one pass, then one token per pass. The whole text
    must fit the context (GPT-2's learned positions end there; chapter 4's bonus shows how to slide instead). Put
    the model in evaluation mode first (``model.eval()``), or dropout stays on."""
    total = token_ids.shape[1] + max_new_tokens
    if total > model.cfg.context_length:
        raise ValueError(f"prompt plus new tokens ({total}) exceed the context length {model.cfg.context_length}")
    weight = model.tok_emb.weight
    cache = InPlaceCache(model.cfg, token_ids.shape[0], total, weight.device, weight.dtype)
    generated, new_ids = [token_ids], token_ids
    for _ in range(max_new_tokens):
        new_ids = model(new_ids, cache)[:, -1].argmax(dim=-1, keepdim=True)  # (batch, 1): the most likely next
        generated.append(new_ids)
    return torch.cat(generated, dim=1)
