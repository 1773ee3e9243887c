"""Code from earlier chapters that chapter 6 builds on (copied so this folder works on its own).

A test keeps every definition here identical to its source in ch03/attention.py, ch04/gpt.py,
ch05/pretraining.py and (the device check) appendix-A/pytorch_basics.py.
"""

from dataclasses import dataclass

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
    tie_embeddings: bool = False  # output head shares the token-embedding matrix, as in GPT-2


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
        return self.out_head(x)  # (batch, tokens, vocab_size) logits


def generate_greedy(model, token_ids, max_new_tokens, context_length):
    """Append ``max_new_tokens`` tokens to ``token_ids`` (batch, tokens), each time the most likely next one."""
    for _ in range(max_new_tokens):
        context = token_ids[:, -context_length:]  # crop to what the model can see
        with torch.no_grad():
            logits = model(context)[:, -1, :]  # (batch, vocab_size): the last position predicts the next token
        next_id = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
        token_ids = torch.cat([token_ids, next_id], dim=1)
    return token_ids


def load_gpt2_params(model, params):
    """Copy GPT-2 weights named as in Hugging Face's GPT-2 (``h.0.attn.c_attn.weight``, ...) into ``model``.

    ``params`` maps names to tensors or arrays; a leading ``transformer.`` is ignored. GPT-2 stores its linear
    layers as (in, out) matrices and fuses the query, key and value projections into one ``c_attn``; here they
    are split and transposed into the model's separate (out, in) ``nn.Linear`` weights. Every tensor is checked
    before any is copied: a missing or misshapen one raises an error naming it and leaves the model unchanged.
    """
    params = {name.removeprefix("transformer."): torch.as_tensor(value) for name, value in params.items()}
    cfg = model.cfg
    d = cfg.emb_dim
    copies = []  # (model parameter, new value), applied once everything has been checked

    def take(name, shape):
        if name not in params:
            raise KeyError(f"GPT-2 weights: tensor '{name}' is missing")
        tensor = params[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"GPT-2 weights: tensor '{name}' has shape {tuple(tensor.shape)}, "
                             f"the model (emb_dim={d}, vocab_size={cfg.vocab_size}, "
                             f"context_length={cfg.context_length}) expects {shape}")
        return tensor

    n_checkpoint_layers = len({name.split(".")[1] for name in params if name.startswith("h.")})
    if n_checkpoint_layers != cfg.n_layers:
        raise ValueError(f"GPT-2 weights have {n_checkpoint_layers} blocks, the model has {cfg.n_layers}")

    copies.append((model.tok_emb.weight, take("wte.weight", (cfg.vocab_size, d))))
    copies.append((model.pos_emb.weight, take("wpe.weight", (cfg.context_length, d))))
    for i, block in enumerate(model.trf_blocks):
        prefix = f"h.{i}."
        copies.append((block.norm1.scale, take(prefix + "ln_1.weight", (d,))))
        copies.append((block.norm1.shift, take(prefix + "ln_1.bias", (d,))))
        qkv_weight = take(prefix + "attn.c_attn.weight", (d, 3 * d)).split(d, dim=1)
        qkv_bias = take(prefix + "attn.c_attn.bias", (3 * d,)).split(d)
        for linear, weight, bias in zip((block.att.W_query, block.att.W_key, block.att.W_value), qkv_weight, qkv_bias):
            copies.append((linear.weight, weight.T))
            if linear.bias is not None:
                copies.append((linear.bias, bias))
            elif bias.any():
                raise ValueError(f"GPT-2 weights: '{prefix}attn.c_attn.bias' is non-zero but the model was built "
                                 "with qkv_bias=False; build it with qkv_bias=True")
        copies.append((block.att.out_proj.weight, take(prefix + "attn.c_proj.weight", (d, d)).T))
        copies.append((block.att.out_proj.bias, take(prefix + "attn.c_proj.bias", (d,))))
        copies.append((block.norm2.scale, take(prefix + "ln_2.weight", (d,))))
        copies.append((block.norm2.shift, take(prefix + "ln_2.bias", (d,))))
        copies.append((block.ff.layers[0].weight, take(prefix + "mlp.c_fc.weight", (d, 4 * d)).T))
        copies.append((block.ff.layers[0].bias, take(prefix + "mlp.c_fc.bias", (4 * d,))))
        copies.append((block.ff.layers[2].weight, take(prefix + "mlp.c_proj.weight", (4 * d, d)).T))
        copies.append((block.ff.layers[2].bias, take(prefix + "mlp.c_proj.bias", (d,))))
    copies.append((model.final_norm.scale, take("ln_f.weight", (d,))))
    copies.append((model.final_norm.shift, take("ln_f.bias", (d,))))
    if cfg.tie_embeddings:
        if "lm_head.weight" in params and not torch.equal(params["lm_head.weight"], params["wte.weight"]):
            raise ValueError("GPT-2 weights: 'lm_head.weight' differs from 'wte.weight', but the model shares one "
                             "matrix between them; build it with tie_embeddings=False")
    else:
        # GPT-2's checkpoints have no separate head: it is the token-embedding matrix.
        head = "lm_head.weight" if "lm_head.weight" in params else "wte.weight"
        copies.append((model.out_head.weight, take(head, (cfg.vocab_size, d))))
    with torch.no_grad():
        for parameter, value in copies:
            parameter.copy_(value)
    return model


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

