"""Chapter 5: pretraining a GPT model on unlabeled text.

Everything the chapter builds around the chapter-4 model to train it: converting between text and token ids,
the next-token cross-entropy loss for a batch and for a whole data loader, a training loop that evaluates,
samples and tracks how many tokens it has seen, loss curves, text generation with temperature, top-k and an
end-of-sequence token, and checkpoints that hold the model, the optimizer and the random-number state so that
training can be continued where it stopped, on any device.

The notebook ch05.ipynb develops this code step by step (a test keeps the two identical); gpt_train.py and
gpt_generate.py are the command-line front ends.
"""

import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from previous_chapters import GPTConfig, GPTModel, computes_like_cpu, create_dataloader, generate_greedy


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


def create_train_val_loaders(text, context_length, batch_size=2, train_ratio=0.9):
    """Split ``text`` into a training and a validation part and serve both as non-overlapping windows.

    The split is made on characters before tokenizing, so no window spans both parts. Training batches are
    shuffled and incomplete ones are dropped (each step then sees the same number of tokens); validation
    batches keep their order and nothing is dropped.
    """
    split = int(train_ratio * len(text))
    train_loader = create_dataloader(text[:split], batch_size=batch_size, max_length=context_length,
                                     stride=context_length, shuffle=True, drop_last=True)
    val_loader = create_dataloader(text[split:], batch_size=batch_size, max_length=context_length,
                                   stride=context_length, shuffle=False, drop_last=False)
    return train_loader, val_loader


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
