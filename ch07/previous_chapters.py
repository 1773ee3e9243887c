"""Code from earlier chapters that chapter 7 builds on (copied so this folder works on its own).

A test keeps every definition here identical to its source: MultiHeadAttention from ch03/attention.py, the GPT
model and GPT-2 weight loading from ch04/gpt.py, and the loss, training loop, text generation and checkpoints
from ch05/pretraining.py, and the device check from appendix-A/pytorch_basics.py.
"""

import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from tqdm import tqdm


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


def batch_loss(input_batch, target_batch, model, device):
    """Mean cross-entropy of the model's next-token predictions over every position of a batch."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (batch, tokens, vocab_size)
    # cross_entropy wants (N, classes) scores and N class indices: merge the batch and token dimensions.
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def loader_loss(data_loader, model, device, num_batches=None):
    """Average batch loss over the first ``num_batches`` batches of ``data_loader`` (all of them by default)."""
    if len(data_loader) == 0:
        raise ValueError("the data loader has no batches: the text is too short for its context length and "
                         "batch size")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i == num_batches:
            break
        total += batch_loss(input_batch, target_batch, model, device).item()
    return total / num_batches


def evaluate(model, train_loader, val_loader, device, num_batches):
    """Training and validation loss on ``num_batches`` batches each, with dropout off and no gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = loader_loss(train_loader, model, device, num_batches)
        val_loss = loader_loss(val_loader, model, device, num_batches)
    model.train()
    return train_loss, val_loss


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


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    """Print the model's greedy continuation of ``start_context`` on one line (a quick look during training)."""
    model.eval()
    prompt = text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate_greedy(model, prompt, max_new_tokens, model.cfg.context_length)
    model.train()
    tqdm.write(token_ids_to_text(token_ids, tokenizer).replace("\n", " "))


def train(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
          start_context, tokenizer, sample_tokens=50):
    """Train for ``num_epochs`` passes over ``train_loader``; return the evaluation history.

    After the first optimizer step and then every ``eval_freq`` steps (steps 1, 1 + eval_freq, ...) the training
    and validation losses are measured on ``eval_iter`` batches; after every epoch the model continues
    ``start_context`` so progress can be read, not just measured. The history lists, for each evaluation, the
    step, the (fractional) epoch, the number of training tokens seen so far and both losses.
    """
    history = {"step": [], "epoch": [], "tokens_seen": [], "train_loss": [], "val_loss": []}
    tokens_seen, step = 0, 0
    start = time.perf_counter()
    # a plain-text bar on stdout, where the messages go too: in a notebook one stream keeps them in order
    progress = tqdm(total=num_epochs * len(train_loader), desc="training", unit="step", file=sys.stdout)
    model.train()
    for epoch in range(num_epochs):
        for i, (input_batch, target_batch) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = batch_loss(input_batch, target_batch, model, device)
            loss.backward()  # gradients of the loss with respect to every parameter
            optimizer.step()
            tokens_seen += input_batch.numel()
            step += 1
            progress.update()
            if (step - 1) % eval_freq == 0:
                train_loss, val_loss = evaluate(model, train_loader, val_loader, device, eval_iter)
                record = {"step": step, "epoch": epoch + (i + 1) / len(train_loader), "tokens_seen": tokens_seen,
                          "train_loss": train_loss, "val_loss": val_loss}
                for key, value in record.items():
                    history[key].append(value)
                tqdm.write(f"epoch {epoch + 1} (step {step:4d}): train loss {train_loss:.3f}, "
                           f"val loss {val_loss:.3f}, {time.perf_counter() - start:.0f} s")
        generate_and_print_sample(model, tokenizer, device, start_context, sample_tokens)
    progress.close()
    print(f"Training took {(time.perf_counter() - start) / 60:.2f} min.")
    return history


def plot_losses(history, path=None):
    """Plot training and validation loss against epochs (bottom axis) and tokens seen (top axis)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["epoch"], history["train_loss"], label="training loss")
    ax.plot(history["epoch"], history["val_loss"], linestyle="--", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    top = ax.twiny()  # a second x-axis sharing the y-axis
    top.plot(history["tokens_seen"], history["train_loss"], alpha=0)  # invisible: only sets the axis range
    top.set_xlabel("tokens seen")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def save_checkpoint(path, model, optimizer=None):
    """Save the model's configuration and weights, the optimizer's state and the random-number state.

    The random state is the CPU generator's and, on a machine with a CUDA or MPS GPU, also the GPU's: together
    they decide the dropout masks and the order of shuffled batches. The file is written under a temporary name
    and renamed when complete.
    """
    path = Path(path)
    checkpoint = {"config": asdict(model.cfg), "model": model.state_dict(), "rng_state": torch.get_rng_state()}
    if torch.cuda.is_available():
        checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state()  # the current GPU's, the one training uses
    if torch.backends.mps.is_available():
        checkpoint["mps_rng_state"] = torch.mps.get_rng_state()
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    partial = path.with_name(path.name + ".part")
    torch.save(checkpoint, partial)
    partial.replace(path)


def load_checkpoint(path, model=None, optimizer=None, device="cpu", restore_rng=False):
    """Load a file written by ``save_checkpoint`` onto ``device`` and return the model.

    Without ``model`` a new GPTModel is built from the stored configuration. A given model must have the
    stored configuration, otherwise a ValueError names the settings that differ. The model is moved to
    ``device`` *before* ``optimizer`` (built for this model's parameters) gets its stored state back, so that
    PyTorch puts every state tensor on the device of its parameter. ``restore_rng`` restores the random-number
    state (dropout masks and the order of shuffled batches): on a CPU a resumed run is then identical to an
    uninterrupted one; on a GPU its random state is restored too (if it was saved on a machine with one), but GPU
    kernels are not all bit-for-bit deterministic, so losses agree closely rather than exactly.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    if not isinstance(checkpoint, dict) or not {"config", "model", "rng_state"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint (it needs the entries "
                         "'config', 'model' and 'rng_state')")
    config = GPTConfig(**checkpoint["config"])
    if model is None:
        model = GPTModel(config)
    elif model.cfg != config:
        differences = ", ".join(f"{f.name}={getattr(config, f.name)} (the model has {getattr(model.cfg, f.name)})"
                                for f in fields(config) if getattr(config, f.name) != getattr(model.cfg, f.name))
        raise ValueError(f"{path} holds a model with a different configuration: {differences}")
    model.to(device)
    model.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        if "optimizer" not in checkpoint:
            raise ValueError(f"{path} holds no optimizer state (it was saved without an optimizer)")
        optimizer.load_state_dict(checkpoint["optimizer"])  # each state tensor goes to its parameter's device
    if restore_rng:
        torch.set_rng_state(checkpoint["rng_state"])
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
        if "mps_rng_state" in checkpoint and torch.backends.mps.is_available():
            torch.mps.set_rng_state(checkpoint["mps_rng_state"])
    return model
