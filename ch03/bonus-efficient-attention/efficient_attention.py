"""Six implementations of the same causal multi-head attention layer, from the most literal to PyTorch's own.

All classes take the chapter's constructor arguments ``(d_in, d_out, context_length, dropout, num_heads,
qkv_bias=False)`` and compute the same function as chapter 3's ``MultiHeadAttention`` when given the same weights.
Each one that stores its weights differently can take over a chapter layer's parameters with
``parameters_from_chapter``, a pure rearrangement of tensors; ``from_chapter`` builds a copy of a chapter layer in
any of the six forms. ``tests/test_equivalence.py`` proves them equal, outputs and gradients; ``benchmark.py``
times them.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from previous_chapters import MultiHeadAttention, MultiHeadAttentionWrapper

PROJECTIONS = ("W_query", "W_key", "W_value")


def head_size(d_out, num_heads):
    """Features per head, with the chapter's error when d_out cannot be split evenly."""
    if d_out % num_heads != 0:
        raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
    return d_out // num_heads


def causal_mask(context_length):
    """True above the diagonal: the positions a token must not attend to."""
    return torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)


def causal_softmax(scores, mask, head_dim, dropout):
    """Mask, scale, softmax and dropout: scores (..., tokens, tokens) -> attention weights of the same shape."""
    num_tokens = scores.shape[-1]
    scores = scores.masked_fill(mask[:num_tokens, :num_tokens], -torch.inf)
    return dropout(torch.softmax(scores / head_dim**0.5, dim=-1))


def chapter_qkv(params, part):
    """The chapter layer's query, key and value tensors for ``part`` ("weight" or "bias"); None if absent."""
    names = [f"{projection}.{part}" for projection in PROJECTIONS]
    return [params[name] for name in names] if names[0] in params else None


def out_proj_from_chapter(params, prefix="out_proj"):
    return {f"{prefix}.weight": params["out_proj.weight"], f"{prefix}.bias": params["out_proj.bias"]}


class HeadsWrapperAttention(nn.Module):
    """The chapter's MultiHeadAttentionWrapper (heads computed one after another) plus the output projection.

    The wrapper alone has no output projection; with it, this layer computes the same function as the others.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        head_dim = head_size(d_out, num_heads)
        self.heads = MultiHeadAttentionWrapper(d_in, head_dim, context_length, dropout, num_heads, qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):  # x: (batch, tokens, d_in)
        return self.out_proj(self.heads(x))  # (batch, tokens, d_out)

    @staticmethod
    def parameters_from_chapter(params, num_heads):
        """Head h gets rows h * head_dim ... (h + 1) * head_dim - 1 of each chapter projection."""
        converted = out_proj_from_chapter(params)
        for part in ["weight", "bias"]:
            for projection, tensor in zip(PROJECTIONS, chapter_qkv(params, part) or []):
                for h, rows in enumerate(tensor.chunk(num_heads)):
                    converted[f"heads.heads.{h}.{projection}.{part}"] = rows
        return converted


class FusedQKVProjection(nn.Module):
    """Shared skeleton of the fused variants: one nn.Linear computes queries, keys and values in one product.

    Subclasses define ``attend(queries, keys, values)`` on tensors of shape (batch, heads, tokens, head_dim).
    """

    def __init__(self, d_in, d_out, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_size(d_out, num_heads)
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):  # x: (batch, tokens, d_in)
        batch, num_tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        context = self.attend(queries, keys, values).transpose(1, 2)  # (batch, tokens, heads, head_dim)
        return self.out_proj(context.reshape(batch, num_tokens, -1))  # (batch, tokens, d_out)

    @staticmethod
    def parameters_from_chapter(params, num_heads):
        """The three chapter projections stacked: rows 0..d_out-1 queries, then keys, then values."""
        converted = {"qkv.weight": torch.cat(chapter_qkv(params, "weight")), **out_proj_from_chapter(params)}
        if chapter_qkv(params, "bias") is not None:
            converted["qkv.bias"] = torch.cat(chapter_qkv(params, "bias"))
        return converted


class FusedQKVAttention(FusedQKVProjection):
    """Fused query/key/value projection; the attention itself written out as in the chapter."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__(d_in, d_out, num_heads, qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length))

    def attend(self, queries, keys, values):
        weights = causal_softmax(queries @ keys.transpose(2, 3), self.mask, self.head_dim, self.dropout)
        return weights @ values  # (batch, heads, tokens, head_dim)


class SDPAttention(FusedQKVProjection):
    """Fused projection plus torch.nn.functional.scaled_dot_product_attention.

    PyTorch picks the fastest kernel it has for the hardware (FlashAttention or memory-efficient attention on
    GPUs, a fused C++ kernel on CPUs); with ``is_causal=True`` it never builds a mask or the full weight matrix
    in memory, so the layer needs no mask buffer and ``context_length`` only documents the intended use.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__(d_in, d_out, num_heads, qkv_bias)
        self.dropout_p = dropout

    def attend(self, queries, keys, values):
        dropout_p = self.dropout_p if self.training else 0.0
        return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)


class EinsumAttention(nn.Module):
    """Heads as an explicit tensor axis: every product is one torch.einsum, and no reshaping is needed.

    Index letters: b batch, t/s query/key token, d input feature, p projection (query, key, value), h head,
    e feature within a head, o output feature.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_size(d_out, num_heads)
        bound = 1 / d_in**0.5  # nn.Linear's default initialisation range
        self.W_qkv = nn.Parameter(torch.empty(3, num_heads, self.head_dim, d_in).uniform_(-bound, bound))
        bias = nn.Parameter(torch.empty(3, num_heads, self.head_dim).uniform_(-bound, bound)) if qkv_bias else None
        self.register_parameter("b_qkv", bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length))

    def forward(self, x):  # x: (batch, tokens, d_in)
        qkv = torch.einsum("btd,phed->pbhte", x, self.W_qkv)  # (3, batch, heads, tokens, head_dim)
        if self.b_qkv is not None:
            qkv = qkv + self.b_qkv[:, None, :, None, :]
        queries, keys, values = qkv
        scores = torch.einsum("bhte,bhse->bhts", queries, keys)  # (batch, heads, tokens, tokens)
        weights = causal_softmax(scores, self.mask, self.head_dim, self.dropout)
        context = torch.einsum("bhts,bhse->bhte", weights, values)  # (batch, heads, tokens, head_dim)
        # Merging the heads and projecting is one contraction over (head, feature) pairs.
        out_weight = self.out_proj.weight.view(-1, self.num_heads, self.head_dim)  # (d_out, heads, head_dim)
        return torch.einsum("bhte,ohe->bto", context, out_weight) + self.out_proj.bias  # (batch, tokens, d_out)

    @staticmethod
    def parameters_from_chapter(params, num_heads):
        """Each chapter projection (d_out, d_in) viewed as (heads, head_dim, d_in), the three stacked."""
        def by_head(tensors):
            return torch.stack([t.view(num_heads, -1, *t.shape[1:]) for t in tensors])

        converted = {"W_qkv": by_head(chapter_qkv(params, "weight")), **out_proj_from_chapter(params)}
        if chapter_qkv(params, "bias") is not None:
            converted["b_qkv"] = by_head(chapter_qkv(params, "bias"))
        return converted


class TorchMultiheadAttention(nn.Module):
    """PyTorch's built-in torch.nn.MultiheadAttention, given the chapter's causal mask and interface.

    nn.MultiheadAttention projects ``embed_dim`` to ``embed_dim``, so d_in must equal d_out (as in GPT models).
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_in != d_out:
            raise ValueError(f"nn.MultiheadAttention needs d_in == d_out, got d_in={d_in}, d_out={d_out}")
        head_size(d_out, num_heads)
        self.attn = nn.MultiheadAttention(d_out, num_heads, dropout=dropout, bias=qkv_bias, batch_first=True)
        if not qkv_bias:
            # Its `bias` flag switches the output projection's bias along with the input projection's; the
            # chapter's layer always has one, so add it (zero, like nn.MultiheadAttention's own initialisation).
            self.attn.out_proj.bias = nn.Parameter(torch.zeros(d_out))
        self.register_buffer("mask", causal_mask(context_length))

    def forward(self, x):  # x: (batch, tokens, d_in)
        num_tokens = x.shape[1]
        out, _ = self.attn(x, x, x, attn_mask=self.mask[:num_tokens, :num_tokens], need_weights=False,
                           is_causal=True)
        return out  # (batch, tokens, d_out)

    @staticmethod
    def parameters_from_chapter(params, num_heads):
        converted = {"attn.in_proj_weight": torch.cat(chapter_qkv(params, "weight")),
                     **out_proj_from_chapter(params, prefix="attn.out_proj")}
        if chapter_qkv(params, "bias") is not None:
            converted["attn.in_proj_bias"] = torch.cat(chapter_qkv(params, "bias"))
        return converted


IMPLEMENTATIONS = {
    "wrapper of heads": HeadsWrapperAttention,
    "chapter MultiHeadAttention": MultiHeadAttention,
    "fused QKV": FusedQKVAttention,
    "einsum": EinsumAttention,
    "scaled_dot_product_attention": SDPAttention,
    "nn.MultiheadAttention": TorchMultiheadAttention,
}
REFERENCE = "chapter MultiHeadAttention"


def chapter_config(mha):
    """The constructor arguments of a chapter MultiHeadAttention layer."""
    return dict(d_in=mha.W_query.in_features, d_out=mha.W_query.out_features, context_length=mha.mask.shape[0],
                dropout=mha.dropout.p, num_heads=mha.num_heads, qkv_bias=mha.W_query.bias is not None)


def convert_chapter_parameters(cls, params, num_heads):
    """Rearrange a dict of chapter-layout tensors (parameters, or their gradients) into the layout of ``cls``."""
    return dict(params) if cls is MultiHeadAttention else cls.parameters_from_chapter(params, num_heads)


def from_chapter(cls, mha):
    """A new ``cls`` layer computing exactly what the chapter MultiHeadAttention ``mha`` computes."""
    config = chapter_config(mha)
    layer = cls(**config)
    converted = convert_chapter_parameters(cls, dict(mha.named_parameters()), config["num_heads"])
    own = dict(layer.named_parameters())
    if converted.keys() != own.keys():
        raise KeyError(f"{cls.__name__}: converted parameters {sorted(converted)} do not match {sorted(own)}")
    with torch.no_grad():
        for name, tensor in converted.items():
            if own[name].shape != tensor.shape:
                raise ValueError(f"{cls.__name__}.{name}: shape {tuple(own[name].shape)}, "
                                 f"converted chapter tensor has {tuple(tensor.shape)}")
            own[name].copy_(tensor)
    return layer
