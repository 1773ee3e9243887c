"""Chapter 6's spam classifier on real pretrained weights: SmolLM2-135M-Instruct through the course's Llama.

Chapter 6's recipe (balanced split, padded messages, a new two-class head read at the last token, the last block(s)
and the final norm trainable) applied to ``llama.py``'s ``LlamaModel``, plus what makes it affordable on a CPU and
what puts its accuracy in context:

- the class is read at each message's last real token (``last_token_positions``): with causal attention that
  position has seen the whole message and none of the padding after it, so padding never changes a result;
- the frozen blocks never change, so their output is computed once per message (``frozen_states``) and training
  runs only the trainable blocks on it (``top_logits``); ``classification_logits`` is the same model run in full;
- ``make_classifier`` turns a model into a classifier that trains the last blocks and the final norm, or LoRA
  matrices in the last blocks; ``train`` and ``run_epoch`` train and evaluate it on either path; ``time_steps``
  times training steps and reports the machine's load beside them;
- a bag-of-words logistic regression (``bag_of_words_vocabulary``, ``bag_of_words``, ``fit_logistic_regression``)
  as a baseline without any neural network.

The notebook real-weights.ipynb uses this code (a test keeps the definitions both hold identical).
"""

import os
import re
import sys
import time

import torch
import torch.nn as nn
from tqdm import tqdm

from lora import add_lora
from previous_chapters import add_classification_head

PAD_TOKEN = "<|endoftext|>"  # SmolLM2's end-of-text token fills short messages up (it never occurs in them)


def last_token_positions(input_ids, pad_token_id):
    """Index of each row's last token that is not ``pad_token_id`` (batch,), for ids (batch, tokens) padded at the
    end. A row of padding only is an error: it holds no message."""
    real = input_ids != pad_token_id  # (batch, tokens)
    empty = (~real.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"row(s) {empty} of the batch hold only padding (token id {pad_token_id})")
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return torch.where(real, positions, -1).amax(dim=1)


def unpadded_messages(dataset, pad_token_id):
    """A padded chapter 6 ``SpamDataset`` as (list of 1-D token id tensors without the padding, labels (n,))."""
    ids = torch.tensor(dataset.encoded)  # (messages, max_length)
    ends = last_token_positions(ids, pad_token_id) + 1
    return [row[:end] for row, end in zip(ids, ends.tolist())], torch.tensor(dataset.labels)


def pad_batch(sequences, pad_value=0):
    """Stack sequences of different lengths (each (length, ...)) into (batch, longest, ...), filled up at the end
    with ``pad_value``; also return each one's last position (batch,)."""
    lengths = torch.tensor([len(s) for s in sequences])
    padded = nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=pad_value)
    return padded, lengths - 1


def classification_logits(model, input_ids, positions):
    """The whole classifier, every block run: class scores (batch, classes) read at ``positions`` (batch,)."""
    return model(input_ids)[torch.arange(len(positions)), positions]


def frozen_states(model, messages, first_block, batch_size=16):
    """The output of the frozen blocks 0 to ``first_block - 1`` for each message: a list of (length, emb_dim).

    Messages are batched by length (little padding to compute) and each result is cut back to its message's own
    tokens; causal attention means the padding after a message never changes them.
    """
    order = sorted(range(len(messages)), key=lambda i: len(messages[i]))
    states = [None] * len(messages)
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="frozen blocks", unit="batch", file=sys.stdout):
            chosen = order[start:start + batch_size]
            input_ids, positions = pad_batch([messages[i] for i in chosen])
            device = model.tok_emb.weight.device
            hidden = model.run_blocks(model.tok_emb(input_ids.to(device)), 0, first_block)  # (batch, tokens, emb)
            for row, (i, last) in enumerate(zip(chosen, positions.tolist())):
                states[i] = hidden[row, :last + 1].cpu()
    return states


def top_logits(model, hidden, positions, first_block):
    """Class scores (batch, classes) from ``hidden`` (batch, tokens, emb_dim), the input of block ``first_block``:
    the remaining blocks, then the final norm and the head at ``positions`` only."""
    hidden = model.run_blocks(hidden, first_block, len(model.trf_blocks))
    return model.out_head(model.final_norm(hidden[torch.arange(len(positions)), positions]))


def make_classifier(model, trainable_blocks=1, lora_rank=0, lora_alpha=16, seed=123):
    """Turn a ``LlamaModel`` into a two-class classifier in place; return the index of its first trainable block.

    Chapter 6's ``add_classification_head`` swaps the output head for a new, trainable linear layer (emb_dim -> 2,
    initialised with ``seed``) and freezes the rest. Without LoRA the last ``trainable_blocks`` blocks and the
    final norm train; with ``lora_rank`` > 0 those blocks get rank-``lora_rank`` LoRA matrices on every linear
    layer instead, and these matrices, the final norm and the head train.
    """
    torch.manual_seed(seed)
    add_classification_head(model, num_classes=2, trainable_blocks=0 if lora_rank else trainable_blocks)
    first_block = len(model.trf_blocks) - trainable_blocks
    if lora_rank:
        add_lora(model.trf_blocks[first_block:], lora_rank, lora_alpha)
    return first_block


def length_batches(lengths, batch_size, generator, pool=64):
    """Shuffled batches (lists of indices) of messages of similar length: a shuffled pool of ``pool`` messages at
    a time is sorted by length and cut into batches, and the batches are shuffled. Less padding to compute."""
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for chunk in order.split(pool):
        by_length = chunk[torch.argsort(torch.as_tensor(lengths)[chunk], stable=True)]
        batches += [batch.tolist() for batch in by_length.split(batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def run_epoch(logits_of, labels, batches, optimizer=None):
    """(mean loss, accuracy) over ``batches`` (lists of indices into ``labels``); ``logits_of(indices)`` gives
    their class scores. With an ``optimizer`` every batch is also a training step, else no gradients are kept."""
    total_loss, correct = 0.0, 0
    for batch in batches:
        with torch.set_grad_enabled(optimizer is not None):
            logits = logits_of(batch)  # (batch, classes)
            loss = nn.functional.cross_entropy(logits, labels[batch].to(logits.device))
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        total_loss += loss.item() * len(batch)
        correct += (logits.argmax(dim=-1).cpu() == labels[batch]).sum().item()
    count = sum(len(batch) for batch in batches)
    return total_loss / count, correct / count


def in_order(count, batch_size):
    """All indices 0 .. count - 1 in batches, in order (for evaluation)."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def cached_logits(model, states, first_block):
    """``logits_of`` for ``run_epoch`` on the frozen blocks' cached output (``frozen_states``)."""
    def logits_of(batch):
        hidden, positions = pad_batch([states[i] for i in batch])
        return top_logits(model, hidden.to(model.out_head.weight.device), positions, first_block)
    return logits_of


def full_logits(model, messages, pad_token_id):
    """``logits_of`` for ``run_epoch`` that runs the whole model on the messages' token ids."""
    def logits_of(batch):
        input_ids, positions = pad_batch([messages[i] for i in batch], pad_token_id)
        return classification_logits(model, input_ids.to(model.out_head.weight.device), positions)
    return logits_of


def train(model, train_logits, train_labels, val_logits, val_labels, lengths, num_epochs=5, lr=5e-5,
          weight_decay=0.1, batch_size=8, seed=123):
    """Train ``model``'s trainable parameters with AdamW (chapter 6's settings by default); return the history.

    ``train_logits`` / ``val_logits`` are ``logits_of`` functions (``cached_logits`` or ``full_logits``) and
    ``lengths`` the training messages' lengths, for ``length_batches``. Per epoch the history records the training
    loss and accuracy averaged over the epoch's batches as they were trained, and the validation loss and accuracy
    on the whole validation set after the epoch, in chapter 6's table format (for ``plot_curves``).
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history = {"epoch": [], "examples_seen": [], "train_loss": [], "val_loss": [], "train_accuracy": [],
               "val_accuracy": []}
    start = time.perf_counter()
    for epoch in range(1, num_epochs + 1):
        model.train()
        train_loss, train_accuracy = run_epoch(train_logits, train_labels,
                                               length_batches(lengths, batch_size, generator), optimizer)
        model.eval()
        val_loss, val_accuracy = run_epoch(val_logits, val_labels, in_order(len(val_labels), 32))
        record = {"epoch": epoch, "examples_seen": epoch * len(train_labels), "train_loss": train_loss,
                  "val_loss": val_loss, "train_accuracy": train_accuracy, "val_accuracy": val_accuracy}
        for key, value in record.items():
            history[key].append(value)
        print(f"epoch {epoch}: train loss {train_loss:.3f}, accuracy {train_accuracy:.1%}; validation loss "
              f"{val_loss:.3f}, accuracy {val_accuracy:.1%}; {time.perf_counter() - start:.0f} s")
    return history


def time_steps(logits_of, labels, batches, model):
    """Seconds per training step over ``batches`` (a throw-away AdamW step on ``model``'s trainable parameters;
    the caller discards the model afterwards), and the load average (1 min) before and after."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    run_epoch(logits_of, labels, batches, optimizer)
    seconds = (time.perf_counter() - start) / len(batches)
    return seconds, (load_before, os.getloadavg()[0])


def words(text):
    """Lower-case words and numbers of a message, for the bag-of-words baseline."""
    return re.findall(r"[a-z0-9]+", text.lower())


def bag_of_words_vocabulary(texts, min_count=2):
    """{word: column} for the words found in at least ``min_count`` of the (training) ``texts``."""
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    counts = {}
    for text in texts:
        for word in set(words(text)):
            counts[word] = counts.get(word, 0) + 1
    vocabulary = sorted(word for word, count in counts.items() if count >= min_count)
    if not vocabulary:
        raise ValueError(f"no word occurs in {min_count} or more of the {len(texts)} texts")
    return {word: column for column, word in enumerate(vocabulary)}


def bag_of_words(texts, vocabulary):
    """(texts, len(vocabulary)) matrix: 1.0 where a text contains a word, else 0 (unknown words are ignored)."""
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    features = torch.zeros(len(texts), len(vocabulary))
    for row, text in enumerate(texts):
        columns = [vocabulary[word] for word in set(words(text)) if word in vocabulary]
        features[row, columns] = 1.0
    return features


def fit_logistic_regression(features, labels, l2=1e-3, max_iter=200):
    """L2-regularised logistic regression fitted by full-batch L-BFGS: returns ``nn.Linear(features, 2)``.

    Minimises the mean cross-entropy plus ``l2`` times the squared norm of the weights (not the bias).
    """
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(f"features must be (n, d) and labels (n,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    if not set(labels.tolist()) <= {0, 1}:
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(labels.tolist()) - {0, 1})}")
    classifier = nn.Linear(features.shape[1], 2)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(classifier(features), labels) + l2 * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return classifier
