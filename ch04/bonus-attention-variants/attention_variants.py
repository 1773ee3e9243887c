"""Attention and feed-forward variants of current LLMs, each a small change to chapter 4's GPT.

* ``GroupedQueryAttention``: groups of query heads share one key/value head (``num_kv_groups`` heads in all);
  with one group it is multi-query attention, with as many groups as heads the chapter's multi-head attention.
  ``window`` turns it into sliding-window attention: each token sees only itself and the ``window - 1`` before it.
* ``MultiHeadLatentAttention``: keys and values are expanded from one small latent vector per token, and the
  cache keeps only that latent; with a cache the expansion is folded into the queries and the output.
* ``build_feed_forward``: the chapter's feed-forward network, with a hidden layer of any size (the chapter's is
  4 · emb_dim); a benchmark uses it to give every variant the same number of parameters.
* ``MoEFeedForward``: several copies of the chapter's feed-forward network ("experts"); a router sends every
  token to its ``top_k`` most likely experts, and ``load_balancing_loss`` keeps the router from favouring a few.
* ``KVCache``: one layer's cached tensors, trimmed to the window when there is one.
* ``VariantConfig``, ``VariantGPT``, ``generate_greedy_cached``: the chapter's GPT built from these pieces.
* ``CacheShape``, ``kv_cache_bytes``, ``cache_shape``, ``REAL_MODELS``: the KV-cache memory of a configuration
  and of published models.

Run ``python attention_variants.py`` to print the KV-cache table of ``REAL_MODELS``.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from previous_chapters import GELU, FeedForward, GPTConfig, LayerNorm


def split_heads(x, num_heads):
    """(batch, tokens, num_heads * head_dim) -> (batch, num_heads, tokens, head_dim)."""
    batch, num_tokens, width = x.shape
    return x.view(batch, num_tokens, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x):
    """(batch, heads, tokens, head_dim) -> (batch, tokens, heads * head_dim), the inverse of ``split_heads``."""
    batch, num_heads, num_tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, num_tokens, num_heads * head_dim)


def hidden_positions(num_queries, num_keys, window=None, device=None):
    """(num_queries, num_keys) mask, True where a query must not look.

    The queries are the last ``num_queries`` of the ``num_keys`` tokens (the new tokens after the cached ones).
    A query sees no later token and, with a ``window``, no token ``window`` or more positions before it.
    """
    query_pos = torch.arange(num_keys - num_queries, num_keys, device=device)[:, None]
    key_pos = torch.arange(num_keys, device=device)[None, :]
    hidden = key_pos > query_pos
    if window is not None:
        hidden |= query_pos - key_pos >= window
    return hidden


def attend(queries, keys, values, dropout, head_dim, window=None):
    """Chapter 3's scaled dot-product attention, softmax(QKᵀ/√head_dim)·V, with the mask of ``hidden_positions``."""
    scores = queries @ keys.transpose(-2, -1)  # (batch, heads, new tokens, all tokens)
    scores = scores.masked_fill(hidden_positions(queries.shape[-2], keys.shape[-2], window, scores.device),
                                -torch.inf)
    weights = torch.softmax(scores / head_dim ** 0.5, dim=-1)
    return dropout(weights) @ values


class KVCache:
    """What one attention layer keeps of the tokens it has seen, each tensor with the tokens on its second-to-last
    axis: keys and values (batch, kv_heads, tokens, head_dim), or a latent (batch, tokens, latent_dim).

    With a ``window``, only the last ``window`` tokens are kept: sliding-window attention never looks further back.
    """

    def __init__(self, window=None):
        self.window = window
        self.tensors = None
        self.length = 0  # tokens seen so far, which is also the position of the next one

    def extend(self, *new):
        """Add the new tokens' tensors; return the kept and the new ones together (what the new tokens attend to)."""
        self.length += new[0].shape[-2]
        if self.tensors is not None:
            new = tuple(torch.cat([kept, added], dim=-2) for kept, added in zip(self.tensors, new))
        if self.window is not None and new[0].shape[-2] > self.window:
            self.tensors = tuple(t[..., -self.window:, :].clone() for t in new)  # a copy frees the older tokens
        else:
            self.tensors = new
        return new

    def nbytes(self):
        """Bytes the cache holds."""
        return sum(t.numel() * t.element_size() for t in self.tensors or ())


class GroupedQueryAttention(nn.Module):
    """Causal attention in which each of ``num_kv_groups`` key/value heads serves ``num_heads / num_kv_groups``
    query heads; optionally restricted to a sliding ``window``. Both kinds of attention the chapter's
    ``MultiHeadAttention`` computes are special cases: ``num_kv_groups == num_heads`` and no window."""

    def __init__(self, d_in, d_out, dropout, num_heads, num_kv_groups, qkv_bias=False, window=None):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        if num_kv_groups < 1 or num_heads % num_kv_groups != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_groups ({num_kv_groups})")
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1 token, not {window}")
        self.num_heads, self.num_kv_groups, self.window = num_heads, num_kv_groups, window
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=qkv_bias)  # smaller than W_query
        self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, cache=None):  # x: (batch, new tokens, d_in)
        queries = split_heads(self.W_query(x), self.num_heads)
        keys = split_heads(self.W_key(x), self.num_kv_groups)  # (batch, kv groups, new tokens, head_dim)
        values = split_heads(self.W_value(x), self.num_kv_groups)
        if cache is not None:
            keys, values = cache.extend(keys, values)  # (batch, kv groups, kept + new tokens, head_dim)
        group_size = self.num_heads // self.num_kv_groups  # query heads 0..group_size-1 share key/value head 0, ...
        keys = keys.repeat_interleave(group_size, dim=1)  # (batch, heads, tokens, head_dim)
        values = values.repeat_interleave(group_size, dim=1)
        context = attend(queries, keys, values, self.dropout, self.head_dim, self.window)
        return self.out_proj(merge_heads(context))

    def new_cache(self):
        return KVCache(self.window)


class MultiHeadLatentAttention(nn.Module):
    """Multi-head attention whose keys and values are expanded from a ``latent_dim``-sized vector per token.

    Without a cache the keys and values are expanded and attended to as in multi-head attention. With a cache only
    the latents are stored, and the expansion is absorbed: qᵀ·(W_uk·c) = (W_ukᵀ·q)ᵀ·c, so each head's query is
    mapped into the latent space and compared with the latents directly, and the weighted sum of latents is
    expanded by W_uv afterwards. Both ways compute the same numbers (up to rounding).
    """

    def __init__(self, d_in, d_out, dropout, num_heads, latent_dim, qkv_bias=False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim, self.latent_dim = num_heads, d_out // num_heads, latent_dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_down = nn.Linear(d_in, latent_dim, bias=False)  # token -> latent c (what the cache keeps)
        self.W_up_key = nn.Linear(latent_dim, d_out, bias=False)  # c -> the keys of all heads
        self.W_up_value = nn.Linear(latent_dim, d_out, bias=False)  # c -> the values of all heads
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, cache=None):  # x: (batch, new tokens, d_in)
        queries = split_heads(self.W_query(x), self.num_heads)  # (batch, heads, new tokens, head_dim)
        latents = self.W_down(x)  # (batch, new tokens, latent_dim)
        if cache is None:  # expanded: ordinary multi-head attention
            keys = split_heads(self.W_up_key(latents), self.num_heads)
            values = split_heads(self.W_up_value(latents), self.num_heads)
            context = attend(queries, keys, values, self.dropout, self.head_dim)
        else:  # absorbed: attention in the latent space, over the cached latents
            (latents,) = cache.extend(latents)  # (batch, kept + new tokens, latent_dim)
            up_key = self.W_up_key.weight.view(self.num_heads, self.head_dim, self.latent_dim)
            up_value = self.W_up_value.weight.view(self.num_heads, self.head_dim, self.latent_dim)
            latent_queries = queries @ up_key  # (batch, heads, new tokens, latent_dim)
            shared = latents.unsqueeze(1)  # one set of "keys" and "values" for all heads
            latent_context = attend(latent_queries, shared, shared, self.dropout, self.head_dim)
            context = latent_context @ up_value.transpose(1, 2)  # (batch, heads, new tokens, head_dim)
        return self.out_proj(merge_heads(context))

    def new_cache(self):
        return KVCache()


def load_balancing_loss(probs, chosen):
    """The auxiliary loss of the Switch Transformer (Fedus, Zoph and Shazeer, 2021, eq. 4), for top-k routing.

    ``probs`` (tokens, experts) are the router's probabilities, ``chosen`` (tokens, k) the experts each token
    went to. With f_i the share of routing slots that went to expert i and P_i its mean probability, the loss is
    experts · Σ_i f_i·P_i: 1.0 when tokens and probability are spread evenly, up to ``experts`` when all go to one.
    """
    num_experts = probs.shape[-1]
    share = torch.bincount(chosen.flatten(), minlength=num_experts).to(probs.dtype) / chosen.numel()
    return num_experts * (share * probs.mean(dim=0)).sum()


def build_feed_forward(cfg):
    """The chapter's ``FeedForward``, with ``cfg.ff_hidden_dim`` hidden units instead of 4 · emb_dim when that is
    set (same layers and parameter names, only their size changes)."""
    feed_forward = FeedForward(cfg)
    if cfg.ff_hidden_dim is not None:
        if cfg.ff_hidden_dim < 1:
            raise ValueError(f"ff_hidden_dim must be at least 1, not {cfg.ff_hidden_dim}")
        feed_forward.layers = nn.Sequential(nn.Linear(cfg.emb_dim, cfg.ff_hidden_dim), GELU(),
                                            nn.Linear(cfg.ff_hidden_dim, cfg.emb_dim))
    return feed_forward


class MoEFeedForward(nn.Module):
    """A mixture of ``num_experts`` copies of the chapter's ``FeedForward`` (sized by ``build_feed_forward``): a
    linear router gives each token a softmax probability per expert; the token goes to its ``top_k`` most likely
    experts, whose outputs are added, each weighted by its probability. After each forward pass ``aux_loss`` holds
    the load-balancing loss."""

    def __init__(self, cfg, num_experts, top_k=1):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k ({top_k}) must be between 1 and num_experts ({num_experts})")
        self.top_k = top_k
        self.router = nn.Linear(cfg.emb_dim, num_experts, bias=False)
        self.experts = nn.ModuleList(build_feed_forward(cfg) for _ in range(num_experts))
        self.aux_loss = None

    def forward(self, x):  # x: (batch, tokens, emb_dim)
        tokens = x.reshape(-1, x.shape[-1])  # routing is per token
        probs = torch.softmax(self.router(tokens), dim=-1)  # (tokens, experts)
        gates, chosen = probs.topk(self.top_k, dim=-1)  # (tokens, top_k) each
        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            token_ids, slots = (chosen == index).nonzero(as_tuple=True)  # the tokens routed to this expert
            if len(token_ids):
                out.index_add_(0, token_ids, gates[token_ids, slots, None] * expert(tokens[token_ids]))
        self.aux_loss = load_balancing_loss(probs, chosen)
        return out.view_as(x)


@dataclass(frozen=True)
class VariantConfig(GPTConfig):
    """Chapter 4's configuration and the choices of this folder; the defaults give the chapter's GPT."""

    n_kv_groups: int | None = None  # key/value heads; None: one per query head (multi-head attention)
    window: int | None = None  # sliding-window length; None: every earlier token is visible
    latent_dim: int | None = None  # set: multi-head latent attention with this latent size
    n_experts: int | None = None  # set: a mixture of this many feed-forward experts
    top_k: int = 1  # experts per token
    ff_hidden_dim: int | None = None  # hidden units of the feed-forward network (each expert); None: 4 · emb_dim


def build_attention(cfg):
    """The attention module a ``VariantConfig`` asks for."""
    if cfg.latent_dim is not None:
        if cfg.n_kv_groups is not None or cfg.window is not None:
            raise ValueError("latent_dim (multi-head latent attention) cannot be combined with n_kv_groups or window")
        return MultiHeadLatentAttention(cfg.emb_dim, cfg.emb_dim, cfg.drop_rate, cfg.n_heads, cfg.latent_dim,
                                        cfg.qkv_bias)
    return GroupedQueryAttention(cfg.emb_dim, cfg.emb_dim, cfg.drop_rate, cfg.n_heads, cfg.n_kv_groups or cfg.n_heads,
                                 cfg.qkv_bias, cfg.window)


class VariantBlock(nn.Module):
    """The chapter's pre-LayerNorm transformer block with the attention and feed-forward the configuration asks for."""

    def __init__(self, cfg):
        super().__init__()
        self.att = build_attention(cfg)
        self.ff = build_feed_forward(cfg) if cfg.n_experts is None else MoEFeedForward(cfg, cfg.n_experts, cfg.top_k)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x, cache=None):
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class VariantGPT(nn.Module):
    """The chapter's GPT model built from ``VariantBlock``s; ``caches`` (from ``new_caches``) let it continue a
    sequence one token at a time. Its parameters have the chapter's names, so a ``GPTModel``'s state loads into
    the default configuration."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(VariantBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    def new_caches(self):
        """One empty cache per block."""
        return [block.att.new_cache() for block in self.trf_blocks]

    def forward(self, in_idx, caches=None):  # in_idx: (batch, new tokens)
        start = 0 if caches is None else caches[0].length
        end = start + in_idx.shape[1]
        if end > self.cfg.context_length:
            raise ValueError(f"{end} tokens in all; the context length is {self.cfg.context_length}")
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(start, end, device=in_idx.device))
        x = self.drop_emb(x)
        for block, cache in zip(self.trf_blocks, caches or [None] * len(self.trf_blocks)):
            x = block(x, cache)
        return self.out_head(self.final_norm(x))

    def aux_loss(self):
        """The sum of the load-balancing losses of the last forward pass (0 without experts)."""
        return sum(block.ff.aux_loss for block in self.trf_blocks if isinstance(block.ff, MoEFeedForward))


def generate_greedy_cached(model, token_ids, max_new_tokens):
    """Append ``max_new_tokens`` greedy tokens to ``token_ids``, feeding one token per step after the prompt.

    Returns the tokens and the caches (to measure their size). The whole sequence must fit the context.
    """
    caches = model.new_caches()
    with torch.no_grad():
        logits = model(token_ids, caches)
        for step in range(max_new_tokens):
            next_id = logits[:, -1].argmax(dim=-1, keepdim=True)
            token_ids = torch.cat([token_ids, next_id], dim=1)
            if step + 1 < max_new_tokens:
                logits = model(next_id, caches)
    return token_ids, caches


@dataclass(frozen=True)
class CacheShape:
    """What a model caches per token: ``values_per_token`` numbers in each of its ``n_layers`` layers, except that
    ``n_sliding_layers`` of them keep at most ``window`` tokens. ``context_length`` is the longest sequence the
    model was built for, ``source`` where the numbers come from."""

    name: str
    n_layers: int
    values_per_token: int  # 2 · kv_heads · head_dim; for MLA the latent plus the RoPE key
    context_length: int
    source: str
    n_sliding_layers: int = 0
    window: int | None = None


def kv_cache_bytes(shape, num_tokens, batch_size=1, bytes_per_value=2):
    """Bytes of the KV cache of ``batch_size`` sequences of ``num_tokens`` tokens (bfloat16: 2 bytes a value)."""
    sliding_tokens = min(num_tokens, shape.window) if shape.n_sliding_layers else 0
    values = shape.values_per_token * ((shape.n_layers - shape.n_sliding_layers) * num_tokens
                                       + shape.n_sliding_layers * sliding_tokens)
    return batch_size * bytes_per_value * values


def gqa_shape(name, n_layers, n_kv_heads, head_dim, context_length, source, n_sliding_layers=0, window=None):
    """The ``CacheShape`` of a model with (grouped-query) attention: a key and a value per key/value head."""
    return CacheShape(name, n_layers, 2 * n_kv_heads * head_dim, context_length, source, n_sliding_layers, window)


def cache_shape(cfg, name="VariantGPT"):
    """The ``CacheShape`` of a ``VariantGPT`` with configuration ``cfg``."""
    if cfg.latent_dim is not None:
        return CacheShape(name, cfg.n_layers, cfg.latent_dim, cfg.context_length, "its configuration")
    return gqa_shape(name, cfg.n_layers, cfg.n_kv_groups or cfg.n_heads, cfg.emb_dim // cfg.n_heads,
                     cfg.context_length, "its configuration", cfg.n_layers if cfg.window else 0, cfg.window)


HF = "https://huggingface.co/"
REAL_MODELS = [
    gqa_shape("GPT-2 small (124M)", 12, 12, 64, 1024, HF + "openai-community/gpt2 (config.json)"),
    gqa_shape("GPT-2 XL (1.5B)", 48, 25, 64, 1024, HF + "openai-community/gpt2-xl (config.json)"),
    gqa_shape("SmolLM2-135M", 30, 3, 64, 8192, HF + "HuggingFaceTB/SmolLM2-135M (config.json)"),
    gqa_shape("Gemma 3 270M", 18, 1, 256, 32768, HF + "google/gemma-3-270m (config.json: 5 of 6 layers sliding; "
              "model card: 32K context)", n_sliding_layers=15, window=512),
    gqa_shape("Llama 3 8B", 32, 8, 128, 8192, HF + "meta-llama/Meta-Llama-3-8B (config.json)"),
    gqa_shape("Qwen3 8B", 36, 8, 128, 32768, HF + "Qwen/Qwen3-8B (config.json; model card: 32,768 tokens "
              "natively, more with YaRN)"),
    gqa_shape("Gemma 3 27B", 62, 16, 128, 131072, HF + "google/gemma-3-27b-pt (config.json); Gemma Team, Gemma 3 "
              "technical report, arXiv:2503.19786 (5 local layers per global one, 128K context)",
              n_sliding_layers=52, window=1024),
    CacheShape("DeepSeek-V3 (671B), MLA", 61, 512 + 64, 131072, HF + "deepseek-ai/DeepSeek-V3 (config.json: "
               "kv_lora_rank 512, qk_rope_head_dim 64); DeepSeek-AI, DeepSeek-V3 technical report, arXiv:2412.19437"),
    CacheShape("DeepSeek-V3 if it cached keys and values", 61, 128 * (192 + 128), 131072,
               "the same 128 heads, keys of 128 + 64 values and values of 128, for comparison"),
]


if __name__ == "__main__":
    lengths = [1024, 8192, 32768, 131072]
    print(f"{'model':42}" + "".join(f"{n:>12,}" for n in lengths) + "   (MiB of bfloat16 KV cache, one sequence)")
    for model in REAL_MODELS:
        print(f"{model.name:42}" + "".join(f"{kv_cache_bytes(model, n) / 2**20:12,.0f}" if n <= model.context_length
                                            else f"{'-':>12}" for n in lengths))
