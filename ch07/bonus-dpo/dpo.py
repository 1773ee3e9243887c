"""Bonus for chapter 7: preference tuning with Direct Preference Optimization (DPO).

DPO was introduced by Rafailov, Sharma, Mitchell, Ermon, Manning and Finn, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model" (NeurIPS 2023, https://arxiv.org/abs/2305.18290). Given a prompt and
two responses, one preferred (``chosen``) and one not (``rejected``), it trains the model to raise the
probability of the chosen response relative to a frozen copy of itself (the *reference*), and to lower that of
the rejected one, with no separate reward model and no reinforcement learning.

This module holds what the notebook dpo.ipynb develops (a test keeps the two identical): loading and checking the
preference data, a dataset and collate function that keep chosen and rejected responses with masks marking their
response tokens, the log-probability of a response under a model, the DPO loss with its implicit rewards, and a
training loop that logs the loss, the reward margin and the preference accuracy.
"""

import copy
import sys
import time
from functools import partial

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from download import download
from previous_chapters import END_OF_TEXT_ID, format_prompt, read_entries

PREFERENCE_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                  "ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json")
PREFERENCE_SHA256 = "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e"
PREFERENCE_KEYS = ("instruction", "input", "chosen", "rejected")  # what DPO reads (entries also hold "output")


def load_preference_data(path="instruction-data-with-preference.json"):
    """The 1,100 preference entries, downloaded (or copied from a mirror) and checked.

    A missing key or a value that is not a string raises an InstructionDataError naming the entry and the key.
    """
    return read_entries(download(PREFERENCE_URL, path, sha256=PREFERENCE_SHA256), keys=PREFERENCE_KEYS)


class PreferenceDataset(Dataset):
    """Each entry tokenized once: its prompt (chapter 7's format, up to the response header) and both responses.

    The prompt and each response are encoded separately, so where the prompt ends is known exactly; every
    response ends with <|endoftext|>, which teaches the model to stop.
    """

    def __init__(self, entries, tokenizer):
        self.encoded = []
        for entry in entries:
            prompt = tokenizer.encode(format_prompt(entry))
            self.encoded.append({"prompt": prompt,
                                 "chosen": tokenizer.encode(entry["chosen"]) + [END_OF_TEXT_ID],
                                 "rejected": tokenizer.encode(entry["rejected"]) + [END_OF_TEXT_ID]})

    def __len__(self):
        return len(self.encoded)

    def __getitem__(self, index):
        return self.encoded[index]


def collate_preferences(batch, pad_token_id=END_OF_TEXT_ID, max_length=None):
    """Turn a list of PreferenceDataset items into padded tensors for the chosen and the rejected sequences.

    Returns a dict with ``chosen`` and ``rejected``, (batch, tokens) token ids of prompt + response + padding, and
    ``chosen_mask`` and ``rejected_mask``, (batch, tokens) booleans that are True exactly on response tokens
    (neither prompt nor padding). Chosen and rejected are padded separately, each to its own longest sequence;
    ``max_length`` (the model's context length) cuts longer sequences.
    """
    collated = {}
    for kind in ("chosen", "rejected"):
        sequences = [item["prompt"] + item[kind] for item in batch]
        if max_length is not None:
            sequences = [s[:max_length] for s in sequences]
        length = max(len(s) for s in sequences)
        token_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.bool)
        for row, (item, sequence) in enumerate(zip(batch, sequences)):
            token_ids[row, :len(sequence)] = torch.tensor(sequence)
            mask[row, len(item["prompt"]):len(sequence)] = True
        collated[kind], collated[f"{kind}_mask"] = token_ids, mask
    return collated


def create_preference_loader(entries, tokenizer, batch_size=8, shuffle=False, drop_last=False, max_length=1024):
    """A DataLoader serving collated preference batches of ``entries`` (tensors on the CPU)."""
    return DataLoader(PreferenceDataset(entries, tokenizer), batch_size=batch_size, shuffle=shuffle,
                      drop_last=drop_last, collate_fn=partial(collate_preferences, max_length=max_length))


def response_log_probs(model, token_ids, response_mask):
    """log p(response | prompt) under ``model`` for each sequence: (batch,).

    The sum, over the tokens marked in ``response_mask`` (batch, tokens), of the log-probability the model gives
    each token after seeing all tokens before it. Prompt and padding tokens contribute nothing.
    """
    logits = model(token_ids[:, :-1])  # (batch, tokens - 1, vocab): position t predicts token t + 1
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = token_ids[:, 1:]  # (batch, tokens - 1)
    token_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (batch, tokens - 1)
    return token_log_probs.masked_fill(~response_mask[:, 1:], 0.0).sum(dim=-1)  # (batch,)


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.1):
    """The DPO loss of Rafailov et al. (2023), eq. 7, and the implicit rewards of the chosen and rejected responses.

    Each argument holds log p(response | prompt), shape (batch,). The implicit reward of a response is
    beta * (log p_policy - log p_reference): how much more likely the policy makes it than the reference does.
    The loss is the mean of -log sigmoid(chosen reward - rejected reward); ``beta`` sets how strongly the policy is
    kept close to the reference. Returns (loss, chosen_rewards, rejected_rewards).
    """
    chosen_rewards = beta * (policy_chosen - reference_chosen)  # (batch,)
    rejected_rewards = beta * (policy_rejected - reference_rejected)  # (batch,)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards, rejected_rewards


def frozen_reference(model):
    """A copy of ``model`` that stays as it is: in eval mode (no dropout) and with no gradients."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def batch_log_probs(policy, reference, batch, device):
    """(policy_chosen, policy_rejected, reference_chosen, reference_rejected) log-probabilities of a batch."""
    policy_lps, reference_lps = [], []
    for kind in ("chosen", "rejected"):
        token_ids, mask = batch[kind].to(device), batch[f"{kind}_mask"].to(device)
        policy_lps.append(response_log_probs(policy, token_ids, mask))
        with torch.no_grad():
            reference_lps.append(response_log_probs(reference, token_ids, mask))
    return (*policy_lps, *reference_lps)


def preference_metrics(loss, chosen_rewards, rejected_rewards):
    """What to log: the loss, the mean rewards, the mean reward margin and the preference accuracy.

    The accuracy is the fraction of pairs whose chosen response has the strictly higher reward.
    """
    margins = (chosen_rewards - rejected_rewards).detach()
    return {"loss": loss.item(), "chosen_reward": chosen_rewards.mean().item(),
            "rejected_reward": rejected_rewards.mean().item(), "margin": margins.mean().item(),
            "accuracy": (margins > 0).float().mean().item()}


def evaluate_dpo(policy, reference, data_loader, device, beta=0.1, num_batches=None):
    """Preference metrics over the first ``num_batches`` batches of ``data_loader`` (all of them if None)."""
    was_training = policy.training
    policy.eval()  # no dropout while measuring
    collected = []
    with torch.no_grad():
        for i, batch in enumerate(data_loader):
            if num_batches is not None and i >= num_batches:
                break
            collected.append(batch_log_probs(policy, reference, batch, device))
    policy.train(was_training)
    log_probs = [torch.cat(column) for column in zip(*collected)]  # four (examples,) tensors
    return preference_metrics(*dpo_loss(*log_probs, beta=beta))


def train_dpo(policy, reference, train_loader, val_loader, optimizer, device, num_epochs, beta=0.1, eval_freq=10,
              eval_iter=None):
    """Train ``policy`` with the DPO loss for ``num_epochs`` passes over ``train_loader``; return the history.

    After the first step and then every ``eval_freq`` steps the preference metrics are measured on ``eval_iter``
    batches of both loaders (all batches if None). The history lists the step of each evaluation and, per
    loader, each metric of ``preference_metrics``.
    """
    history = {"step": [], "train": [], "val": []}
    step = 0
    start = time.perf_counter()
    progress = tqdm(total=num_epochs * len(train_loader), desc="DPO", unit="step", file=sys.stdout)
    policy.train()
    for _ in range(num_epochs):
        for batch in train_loader:
            optimizer.zero_grad()
            loss, _, _ = dpo_loss(*batch_log_probs(policy, reference, batch, device), beta=beta)
            loss.backward()
            optimizer.step()
            step += 1
            progress.update()
            if (step - 1) % eval_freq == 0:
                train = evaluate_dpo(policy, reference, train_loader, device, beta, eval_iter)
                val = evaluate_dpo(policy, reference, val_loader, device, beta, eval_iter)
                history["step"].append(step)
                history["train"].append(train)
                history["val"].append(val)
                tqdm.write(f"step {step:4d}: train loss {train['loss']:.3f}, margin {train['margin']:.3f}, "
                           f"accuracy {train['accuracy']:.2f} | val loss {val['loss']:.3f}, "
                           f"margin {val['margin']:.3f}, accuracy {val['accuracy']:.2f}")
    progress.close()
    print(f"DPO training took {(time.perf_counter() - start) / 60:.2f} min.")
    return history


def plot_dpo_history(history):
    """Loss, reward margin and preference accuracy on the training and validation batches, against the step."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, metric in zip(axes, ("loss", "margin", "accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(history["step"], [m[metric] for m in history[split]], style, label=split)
        ax.set(xlabel="step", title=metric)
        ax.legend()
    fig.tight_layout()
    return fig
