"""Every exercise check rejects the mistakes learners make, with a useful hint, and accepts a correct answer.

tests/test_exercises.py proves that each check fails on the blank template, but there every check stops at its
first "answer is still None" guard, so a check whose real comparison were vacuous would still pass. Here every
``check_exercise_*`` function of every ``exercise_checks.py`` gets plausible wrong answers (a transposed weight,
the untied parameter count, float32 instead of bfloat16 bytes, an unseeded run, ...) and must raise
``AssertionError`` whose message contains the hint a learner needs; and it gets a correct answer, computed here
the way the solution notebook does it, which must pass. ``test_every_check_has_wrong_and_correct_answers`` fails
as soon as a check exists without entries in the tables below.

The answers are built lazily, in a scratch folder that is the current directory (the checks and answers write
The Verdict, checkpoints and GPT-2 downloads there, never into a course folder). The GPT-2 checks use the tiny
synthetic checkpoints of the root conftest.py and every model is tiny: with one thread the module took about 30 s
of CPU time on the development machine.
"""

import ast
import copy
import importlib
import re
import sys
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import Callable, NamedTuple
from unittest.mock import patch

import pytest
import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

pytestmark = pytest.mark.synthetic_gpt2  # the chapter 5 checks load GPT-2 (the root conftest's stand-ins)

ROOT = Path(__file__).resolve().parents[1]
CHECK_FILES = sorted(p for p in ROOT.rglob("exercise_checks.py") if ".ipynb_checkpoints" not in p.parts)


def import_from(folder, *names):
    """Import modules of one course folder by plain name, as its own code does, without leaking them.

    Folders reuse module names (two ``previous_chapters.py``, two ``download.py``), so the folder's module names
    are cleared before and forgotten after the import; the returned module objects keep working.
    """
    path = ROOT / folder
    stems = {p.stem for p in path.glob("*.py")} - {"conftest"}
    saved = {name: sys.modules.pop(name) for name in stems if name in sys.modules}
    sys.path.insert(0, str(path))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(path))
        for name in stems:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


appendix_checks, pytorch_basics = import_from("appendix-A", "exercise_checks", "pytorch_basics")
ch02_checks, text_data = import_from("ch02", "exercise_checks", "text_data")
ch03_checks, attention = import_from("ch03", "exercise_checks", "attention")
ch04_checks, gpt = import_from("ch04", "exercise_checks", "gpt")
ch05_checks, pretraining, ch05_previous, gpt_download = import_from(
    "ch05", "exercise_checks", "pretraining", "previous_chapters", "gpt_download")
ch06_checks, classification, ch06_gpt_download = import_from(
    "ch06", "exercise_checks", "classification", "gpt_download")
ch07_checks, instruction_finetuning, ch07_previous, ch07_lora, ch07_gpt_download = import_from(
    "ch07", "exercise_checks", "instruction_finetuning", "previous_chapters", "lora", "gpt_download")
CHECKS = {name: function
          for module in [appendix_checks, ch02_checks, ch03_checks, ch04_checks, ch05_checks, ch06_checks, ch07_checks]
          for name, function in vars(module).items() if name.startswith("check_")}


class Wrong(NamedTuple):
    check: str  # name of the check function
    mistake: str  # what the learner did
    answers: Callable[[], dict]  # the check's keyword arguments
    hint: str  # a fragment the AssertionError message must contain


def num_params(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------- Appendix A

def a2_gradients(relu=True, backward_calls=1):
    x, W1, w2, target = appendix_checks.exercise_A_2_inputs()
    W1.requires_grad_(True)
    w2.requires_grad_(True)
    for _ in range(backward_calls):
        hidden = torch.relu(W1 @ x) if relu else W1 @ x
        ((w2 @ hidden - target) ** 2).backward()
    return dict(grad_W1=W1.grad, grad_w2=w2.grad)


class SquaresDataset(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i)]), torch.tensor([float(i * i)])


class IntegerSquaresDataset(SquaresDataset):
    def __getitem__(self, i):
        return torch.tensor([i]), torch.tensor([i * i])


def a3_answers(dataset_class=SquaresDataset, n=103, shuffle=True, drop_last=True, seeded=True):
    generator = torch.Generator().manual_seed(123) if seeded else None
    loader = DataLoader(dataset_class(n), batch_size=10, shuffle=shuffle, drop_last=drop_last, generator=generator)
    return dict(SquaresDataset=dataset_class, squares_loader=loader)


@cache
def a4_trained(hidden_units):
    """A model trained on ring data: with hidden units it can bend its boundary, without them it is linear."""
    torch.manual_seed(123)
    features, labels = appendix_checks.make_rings(1000, seed=1)
    if hidden_units:
        model = torch.nn.Sequential(torch.nn.Linear(2, hidden_units), torch.nn.ReLU(), torch.nn.Linear(hidden_units, 2))
    else:
        model = torch.nn.Linear(2, 2)
    for _ in range(300):  # full-batch gradient descent, written out
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= 0.5 * parameter.grad
    return model


def a5_answers(save="state_dict", train_after_saving=False, load=True, evaluate=True, same_object=False,
               path="exercise_model.pth"):
    torch.manual_seed(123)
    original = pytorch_basics.NeuralNetwork(pytorch_basics.NUM_FEATURES, pytorch_basics.NUM_CLASSES)
    if save == "model":  # pickling the whole object needs its module importable by name, as in the notebook
        with patch.dict(sys.modules, pytorch_basics=pytorch_basics):
            torch.save(original, "exercise_model.pth")
        restored = copy.deepcopy(original)  # what the unsafe torch.load(..., weights_only=False) would return
    else:
        torch.save(original.state_dict(), "exercise_model.pth")
        restored = pytorch_basics.NeuralNetwork(pytorch_basics.NUM_FEATURES, pytorch_basics.NUM_CLASSES)
        if load:
            restored.load_state_dict(torch.load("exercise_model.pth", weights_only=True))
    if train_after_saving:
        with torch.no_grad():
            original.layers[0].weight.add_(0.01)  # as one more training step would
    if evaluate:
        restored.eval()
    return dict(restored_model=original if same_object else restored, checkpoint_path=path, original_model=original)


# ---------------------------------------------------------------------------------------------------- Chapter 2

BPE = tiktoken.get_encoding("gpt2")
SENTENCE = "Edith Wharton wrote The Verdict in 1908; Jack Gisburn is its painter."


def ch02_21(ids=None, pieces=None, decoded=None):
    correct_ids = BPE.encode("Akwirw ier")
    correct_pieces = [BPE.decode([i]) for i in correct_ids]
    return dict(ids=correct_ids if ids is None else ids, pieces=correct_pieces if pieces is None else pieces,
                decoded=BPE.decode(correct_ids) if decoded is None else decoded)


def first_batch(max_length, stride, shuffle=False, batch_size=4):
    torch.manual_seed(123)
    loader = text_data.create_dataloader(text_data.load_verdict(), batch_size=batch_size, max_length=max_length,
                                         stride=stride, shuffle=shuffle)
    return next(iter(loader))


def ch02_22(**changes):
    answers = dict(batch_2_2=first_batch(2, 2), batch_8_2=first_batch(8, 2), overlap_8_2=6)
    return {**answers, **changes}


def ch02_23(special_tokens=("<|endoftext|>", "<|unk|>"), count_specials=True, order=list):
    words = text_data.split_words(text_data.load_verdict())
    vocab = text_data.build_vocab(words, special_tokens=list(special_tokens))
    unknown = [w for w in text_data.split_words(SENTENCE) if w not in vocab]
    return dict(vocab_size_v2=len(vocab) if count_specials else len(set(words)),
                encoded=text_data.SimpleTokenizerV2(vocab).encode(SENTENCE), unknown_words=order(unknown))


class Agrees(int):
    """A number that claims to equal anything: a check must convert an answer before comparing it."""

    __hash__ = int.__hash__

    def __eq__(self, other):
        return True


class AgreesFloat(float):
    """A rate that claims to equal anything."""

    __hash__ = float.__hash__

    def __eq__(self, other):
        return True


def windows_ceil(num_tokens, max_length, stride):
    return -(-(num_tokens - max_length) // stride)


def windows_floor_plus_one(num_tokens, max_length, stride):  # forgets the extra token the last target needs
    return (num_tokens - max_length) // stride + 1


def windows_floor(num_tokens, max_length, stride):
    return (num_tokens - max_length) // stride


def ch02_24(count_windows=windows_ceil, stride=128):
    return dict(count_windows=count_windows,
                num_windows_verdict=count_windows(len(BPE.encode(text_data.load_verdict())), 256, stride))


def ch02_25(pos_rows=1024, add_positions=True, count=("token", "position")):
    torch.manual_seed(123)
    token_layer = torch.nn.Embedding(50257, 768)
    pos_layer = torch.nn.Embedding(pos_rows, 768)
    inputs, _ = first_batch(1024, 1024, batch_size=2)
    embeddings = token_layer(inputs) + (pos_layer(torch.arange(1024)) if add_positions else 0)
    layers = {"token": token_layer, "position": pos_layer}
    return dict(token_embedding_layer=token_layer, pos_embedding_layer=pos_layer, input_embeddings=embeddings,
                num_params=sum(num_params(layers[name]) for name in count))


# ---------------------------------------------------------------------------------------------------- Chapter 3

INPUTS = torch.tensor([[0.62, 0.18, 0.91], [0.55, 0.22, 0.84], [0.12, 0.77, 0.30],
                       [0.21, 0.69, 0.15], [0.08, 0.35, 0.52], [0.48, 0.41, 0.73]])  # (tokens, d_in)


def ch03_31(how="transpose", qkv_bias=False, swap_query_key=False):
    torch.manual_seed(123)
    sa_v1 = attention.SelfAttentionV1(d_in=3, d_out=2)
    sa_v2 = attention.SelfAttentionV2(d_in=3, d_out=2, qkv_bias=qkv_bias)
    sources = {"W_query": sa_v1.W_query, "W_key": sa_v1.W_key, "W_value": sa_v1.W_value}
    if swap_query_key:
        sources["W_query"], sources["W_key"] = sources["W_key"], sources["W_query"]
    for name, matrix in sources.items():
        layer = getattr(sa_v2, name)
        if how == "parameter":  # the (d_in, d_out) matrix as it is
            layer.weight = torch.nn.Parameter(matrix.detach().clone())
        else:
            with torch.no_grad():
                layer.weight.copy_(matrix.T if how == "transpose" else matrix.reshape(layer.weight.shape))
    return dict(sa_v2=sa_v2, sa_v1=sa_v1, inputs=INPUTS)


def ch03_32(cls="wrapper", d_out=1, context_length=6, dropout=0.0, num_heads=2):
    torch.manual_seed(123)
    module = attention.MultiHeadAttentionWrapper if cls == "wrapper" else attention.MultiHeadAttention
    return dict(mha_2d=module(d_in=3, d_out=d_out, context_length=context_length, dropout=dropout,
                              num_heads=num_heads), batch=torch.stack((INPUTS, INPUTS)))


def ch03_33(dropout=0.1, qkv_bias=False, count=num_params):
    layer = attention.MultiHeadAttention(d_in=768, d_out=768, context_length=1024, dropout=dropout, num_heads=12,
                                         qkv_bias=qkv_bias)
    return dict(gpt2_attention=layer, gpt2_attention_params=count(layer))


def ch03_35(mask_function):
    return dict(sliding_window_mask=mask_function)


def sliding_window_mask(num_tokens, window):
    ones = torch.ones(num_tokens, num_tokens, dtype=torch.bool)
    return torch.triu(ones, diagonal=1) | torch.tril(ones, diagonal=-window)


# ---------------------------------------------------------------------------------------------------- Chapter 4

def ch04_41(swap=False, count=num_params):
    torch.manual_seed(123)
    block = gpt.TransformerBlock(gpt.GPT_CONFIG_124M)
    ff, att = count(block.ff), count(block.att)
    return dict(ff_params=att, att_params=ff) if swap else dict(ff_params=ff, att_params=att)


def ch04_42(qkv_bias=True, tie_embeddings=True, bytes_per_number=2, megabyte=1024 ** 2, sizes=gpt.GPT2_SIZES):
    answer = {}
    for name, cfg in sizes.items():
        with torch.device("meta"):  # shapes only, no memory
            model = gpt.GPTModel(replace(cfg, qkv_bias=qkv_bias, tie_embeddings=tie_embeddings))
        n = num_params(model)
        answer[name] = (n, n * bytes_per_number / megabyte)
    return dict(gpt2_sizes=answer)


@dataclass(frozen=True)
class GPTConfigDropouts(gpt.GPTConfig):
    drop_rate_emb: float = 0.1
    drop_rate_attn: float = 0.1
    drop_rate_shortcut: float = 0.1


def model_class(attention_rate="drop_rate_attn", shortcut_rate="drop_rate_shortcut", extra_module=False, rate=float):
    """A model class for exercise 4.3 as the solution writes it; the arguments introduce a learner's mistakes."""

    class GPTModelDropouts(gpt.GPTModel):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.drop_emb.p = rate(cfg.drop_rate_emb)
            for block in self.trf_blocks:
                block.att.dropout.p = rate(getattr(cfg, attention_rate))
                block.drop_shortcut.p = rate(getattr(cfg, shortcut_rate))
            if extra_module:  # a new module for the attention rate instead of setting the existing one
                self.drop_attn = torch.nn.Dropout(cfg.drop_rate_attn)

    return GPTModelDropouts


# ---------------------------------------------------------------------------------------------------- Chapter 5

TOY_LOGITS = torch.tensor([4.0, 3.6, 2.9, 2.0, 1.7, 0.6, -0.8, -1.5])


def ch05_51(divide=True, seed=123, draw_from="hot", one_call=True, as_int=True):
    scale = (lambda t: TOY_LOGITS / t) if divide else (lambda t: TOY_LOGITS * t)
    probas = {"cold": torch.softmax(scale(0.5), dim=0), "hot": torch.softmax(scale(3.0), dim=0)}
    torch.manual_seed(seed)
    if one_call:
        draws = torch.multinomial(probas[draw_from], num_samples=1000, replacement=True)
    else:
        draws = torch.cat([torch.multinomial(probas[draw_from], num_samples=1) for _ in range(1000)])
    count = (draws == 0).sum()
    return dict(toy_logits=TOY_LOGITS, probas_cold=probas["cold"], probas_hot=probas["hot"],
                silent_draws_hot=int(count) if as_int else count)


@cache
def small_model():
    torch.manual_seed(123)
    return ch05_previous.GPTModel(ch05_previous.GPTConfig(context_length=16, emb_dim=8, n_heads=2, n_layers=1)).eval()


def ch05_52(temperature=0.0, top_k=1, max_new_tokens=20):
    model = small_model()
    prompt = pretraining.text_to_token_ids("Every effort moves you", BPE)
    generate = pretraining.generate
    greedy = generate(model, prompt, 20, model.cfg.context_length, temperature=0.0)
    torch.manual_seed(123)
    other = generate(model, prompt, max_new_tokens, model.cfg.context_length, temperature=temperature, top_k=top_k)
    return dict(model=model, prompt=prompt, greedy_ids=greedy, top1_ids=other)


TINY_CONFIG = ch05_previous.GPTConfig(vocab_size=64, context_length=8, emb_dim=16, n_heads=2, n_layers=1)


@cache
def tiny_loader():
    """Four batches of random token windows, standing in for The Verdict's training loader."""
    tokens = torch.randint(0, TINY_CONFIG.vocab_size, (8, TINY_CONFIG.context_length + 1),
                           generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=2)


def train_epochs(model, optimizer, epochs):
    model.train()
    for _ in range(epochs):
        for inputs, targets in tiny_loader():
            optimizer.zero_grad()
            pretraining.batch_loss(inputs, targets, model, "cpu").backward()
            optimizer.step()


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)


@cache
def ch05_checkpoint():
    """One epoch of training saved with save_checkpoint, as the exercise's set-up cell does."""
    torch.manual_seed(123)
    model = ch05_previous.GPTModel(TINY_CONFIG)
    optimizer = adamw(model)
    train_epochs(model, optimizer, 1)
    pretraining.save_checkpoint("exercise_checkpoint.pth", model, optimizer)
    return model, optimizer


def ch05_53(load_model=True, load_optimizer=True, epochs=1, optimizer="new"):
    _, first_optimizer = ch05_checkpoint()
    torch.manual_seed(7)  # the new model's initial weights differ from the first one's
    model = ch05_previous.GPTModel(TINY_CONFIG)
    new_optimizer = adamw(model)
    if load_model and load_optimizer:
        pretraining.load_checkpoint("exercise_checkpoint.pth", model, new_optimizer)
    elif load_model:
        pretraining.load_checkpoint("exercise_checkpoint.pth", model)
    elif load_optimizer:
        new_optimizer.load_state_dict(torch.load("exercise_checkpoint.pth", weights_only=True)["optimizer"])
    train_epochs(model, new_optimizer, epochs)
    return dict(checkpoint_path="exercise_checkpoint.pth", resumed_model=model,
                resumed_optimizer=first_optimizer if optimizer == "first" else new_optimizer,
                train_loader=tiny_loader())


@cache
def stand_in_gpt2(size):
    """GPT-2 as load_gpt2 gives it; here the root conftest's synthetic stand-in."""
    return gpt_download.load_gpt2(size, source="hf")


@cache
def gpt2_losses(num_batches):
    """The solution's training and validation losses of GPT-2 124M on The Verdict."""
    torch.manual_seed(123)
    train_loader, val_loader = pretraining.create_train_val_loaders(ch05_previous.load_verdict(), 256, 2)
    with torch.no_grad():
        return tuple(pretraining.loader_loss(loader, stand_in_gpt2("124M"), "cpu", num_batches)
                     for loader in (train_loader, val_loader))


def ch05_54(model="124M", num_batches=None, swap=False):
    train_loss, val_loss = gpt2_losses(num_batches)
    if swap:
        train_loss, val_loss = val_loss, train_loss
    answered = stand_in_gpt2(model) if model != "untrained" else ch05_previous.GPTModel(stand_in_gpt2("124M").cfg)
    return dict(gpt2=answered, gpt2_train_loss=train_loss, gpt2_val_loss=val_loss)


def ch05_55(model_size="355M", model="355M", writer="355M", temperature=0.0, max_new_tokens=20, with_prompt=True):
    stand_in_gpt2("355M")  # the learner has loaded GPT-2 355M, whichever model the answer holds
    prompt = pretraining.text_to_token_ids("Every effort moves you", BPE)
    torch.manual_seed(123)
    ids = pretraining.generate(stand_in_gpt2(writer), prompt, max_new_tokens, 1024, temperature=temperature)
    text = pretraining.token_ids_to_text(ids if with_prompt else ids[:, prompt.shape[1]:], BPE)
    return dict(model_size=model_size, medium=stand_in_gpt2(model), medium_text=text)


# ---------------------------------------------------------------------------------------------------- Chapter 6

@cache
def ch06_splits():
    """The chapter's CSV files, written into the scratch folder's sms_spam/ as the exercises' set-up cell does."""
    return classification.write_splits(classification.download_sms_spam("sms_spam"), "sms_spam")


def ch06_61(max_length=1024, val_max_length=1024, pad=50256, batch_size=8, drop_last=True, shuffle=True,
            loader_over="train", as_list=False):
    paths = ch06_splits()
    train = classification.SpamDataset(paths["train"], BPE, max_length, pad_token_id=pad)
    val = classification.SpamDataset(paths["validation"], BPE, val_max_length, pad_token_id=pad)
    loader = DataLoader(train if loader_over == "train" else val, batch_size=batch_size, shuffle=shuffle,
                        drop_last=drop_last)
    return dict(train_dataset_full=train, val_dataset_full=val, train_loader_full=list(loader) if as_list else loader)


def ch06_62(trainable="all", optimizer_before_unfreezing=False, train=True, new_head=True, frozen_while_training=(),
            optimizer="own"):
    torch.manual_seed(123)
    model = ch06_gpt_download.load_gpt2("124M")
    if new_head:
        classification.add_classification_head(model, 2, 1 if optimizer_before_unfreezing else trainable)
    else:
        model.requires_grad_(True)
    for name in frozen_while_training:  # frozen for training, unfrozen afterwards
        getattr(model, name).requires_grad_(False)
    parameters = model.parameters() if frozen_while_training else [p for p in model.parameters() if p.requires_grad]
    optimizer_all = torch.optim.AdamW(parameters, lr=5e-5, weight_decay=0.1)
    if optimizer_before_unfreezing:
        model.requires_grad_(True)
    if train:  # two steps on random messages of 12 tokens with random labels
        generator = torch.Generator().manual_seed(1)
        messages = TensorDataset(torch.randint(0, 50257, (16, 12), generator=generator),
                                 torch.randint(0, 2, (16,), generator=generator))
        loader = DataLoader(messages, batch_size=8)
        used = optimizer_all if optimizer == "own" else torch.optim.AdamW(model.parameters(), lr=5e-5)
        classification.train_classifier(model, loader, loader, used, "cpu", num_epochs=1, eval_freq=5, eval_iter=1)
    for name in frozen_while_training:
        getattr(model, name).requires_grad_(True)
    return dict(model_all=model, optimizer_all=optimizer_all)


def first_position(model, input_batch):
    return model(input_batch)[:, 0, :]


# ---------------------------------------------------------------------------------------------------- Chapter 7

@cache
def ch07_train_data():
    return instruction_finetuning.split_data(instruction_finetuning.load_instruction_data())[0]


def phi3_prompt(entry, input_line="if any", input_first=False, end="\n"):
    """A Phi-3 style prompt as the solution writes it; the arguments introduce a learner's mistakes."""
    user = [entry["instruction"]]
    if entry["input"] or input_line == "always":
        user = [entry["input"], *user] if input_first else [*user, entry["input"]]
    return "\n".join(["<|user|>", *user, "<|assistant|>"]) + end


def ch07_71(prompt=phi3_prompt, with_output=True, swap=False):
    def tokens(style):
        return sum(len(BPE.encode(style(e) + (e["output"] if with_output else ""))) for e in ch07_train_data())

    counts = [tokens(instruction_finetuning.format_prompt), tokens(prompt)]
    alpaca, phi3 = reversed(counts) if swap else counts
    return dict(format_prompt_phi3=prompt, alpaca_tokens=alpaca, phi3_tokens=phi3)


def masked_dataset_class(pairs=True, length="tokens"):
    """MaskedInstructionDataset for exercise 7.2 as the solution writes it, or with a learner's mistake."""

    class MaskedInstructionDataset(Dataset):
        def __init__(self, entries, tokenizer):
            self.items = []
            for entry in entries:
                prompt = instruction_finetuning.format_prompt(entry)
                ids = tokenizer.encode(prompt + entry["output"])
                prompt_length = len(tokenizer.encode(prompt)) if length == "tokens" else len(prompt)
                self.items.append((ids, prompt_length) if pairs else ids)

        def __len__(self):
            return len(self.items)

        def __getitem__(self, index):
            return self.items[index]

    return MaskedInstructionDataset


def masked_collate(mask_end=-1, tensor="targets", mask_padding=True):
    """collate_masked for exercise 7.2: masks positions up to prompt_length + mask_end of `tensor`."""
    ignore = instruction_finetuning.IGNORE_INDEX

    def collate_masked(batch, pad_token_id=50256, ignore_index=ignore, allowed_max_length=None, device="cpu"):
        inputs, targets = instruction_finetuning.collate(
            [ids for ids, _ in batch], pad_token_id, ignore_index if mask_padding else pad_token_id,
            allowed_max_length, device)
        masked = targets if tensor == "targets" else inputs
        for row, (_, prompt_length) in enumerate(batch):
            masked[row, :prompt_length + mask_end] = ignore_index
        return inputs, targets

    return collate_masked


def ch07_72(dataset_class=None, collate_fn=None):
    return dict(MaskedInstructionDataset=dataset_class or masked_dataset_class(),
                collate_masked=collate_fn or masked_collate())


@cache
def ch07_gpt2(size):
    """GPT-2 as chapter 7's load_gpt2 gives it (the root conftest's stand-in); copy it before changing it."""
    return ch07_gpt_download.load_gpt2(size)


def ch07_73(size="355M", lora=True, layers="all", freeze=True, count="trainable", optimizer="own", train=True,
            rank=16, lora_rank=16, alpha=16, optimizer_class=torch.optim.AdamW, lr=5e-5, weight_decay=0.1):
    """Exercise 7.3's answers as the solution builds them (on the root conftest's stand-in GPT-2), or with a
    learner's mistake."""
    torch.manual_seed(123)
    model = copy.deepcopy(ch07_gpt2(size))
    ch07_gpt2("355M")  # the learner has loaded GPT-2 medium once, whichever model the answer holds
    if lora and layers == "all":
        ch07_lora.add_lora(model, rank=lora_rank, alpha=alpha)
    elif lora:  # only the attention's query and value projections, by hand
        model.requires_grad_(False)
        for block in model.trf_blocks:
            block.att.W_query = ch07_lora.LinearWithLoRA(block.att.W_query, lora_rank, alpha)
            block.att.W_value = ch07_lora.LinearWithLoRA(block.att.W_value, lora_rank, alpha)
    if not freeze:
        model.requires_grad_(True)
    trainable, total = ch07_lora.count_parameters(model)
    owner = model if optimizer == "own" else ch07_lora.add_lora(copy.deepcopy(ch07_gpt2(size)), lora_rank, alpha)
    adamw = optimizer_class([p for p in owner.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    if train:  # one step on random token ids; a learning rate of 5e-5 still moves B away from zero
        ids = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(0))
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        adamw.step()
    return dict(lora_model=model, lora_optimizer=adamw, rank=rank,
                trainable_params=trainable if count == "trainable" else total)


# ---------------------------------------------------------------------------------------------------- The tables

WRONG_ANSWERS = [
    Wrong("check_exercise_A_1", "a bias counted for the bias=False layer",
          lambda: dict(num_params=5252, num_biases=132), "one layer here was built with bias=False"),
    Wrong("check_exercise_A_1", "the biases left out of the total",
          lambda: dict(num_params=5120, num_biases=68), "plus its biases"),
    Wrong("check_exercise_A_2", "backward() run twice, so the gradients accumulated",
          lambda: a2_gradients(backward_calls=2), "twice the gradient"),
    Wrong("check_exercise_A_2", "the ReLU left out of the loss",
          lambda: a2_gradients(relu=False), "build the loss exactly as in the formula"),
    Wrong("check_exercise_A_2", "a transposed gradient",
          lambda: {**a2_gradients(), "grad_W1": a2_gradients()["grad_W1"].T}, "the shape of the weights"),
    Wrong("check_exercise_A_3", "integer tensors", lambda: a3_answers(IntegerSquaresDataset), "from float(i)"),
    Wrong("check_exercise_A_3", "the incomplete last batch kept",
          lambda: a3_answers(drop_last=False), "gave 11 batches, not 10"),
    Wrong("check_exercise_A_3", "no shuffling", lambda: a3_answers(shuffle=False), "ask the DataLoader to shuffle"),
    Wrong("check_exercise_A_3", "an unseeded shuffle", lambda: a3_answers(seeded=False), "seeded torch.Generator"),
    Wrong("check_exercise_A_3", "a dataset of 100 examples",
          lambda: a3_answers(n=100), "should load SquaresDataset(103)"),
    Wrong("check_exercise_A_4", "a linear model", lambda: dict(rings_model=a4_trained(0)), "a hidden layer"),
    Wrong("check_exercise_A_4", "one output instead of two logits",
          lambda: dict(rings_model=torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(),
                                                       torch.nn.Linear(16, 1))),
          "to (batch, 2) logits"),
    Wrong("check_exercise_A_5", "the whole model object saved",
          lambda: a5_answers(save="model"), "the safe loader refuses a pickled model object"),
    Wrong("check_exercise_A_5", "saved before the last training step",
          lambda: a5_answers(train_after_saving=True), "save after training"),
    Wrong("check_exercise_A_5", "eval() not called", lambda: a5_answers(evaluate=False), "call restored_model.eval()"),
    Wrong("check_exercise_A_5", "the file never loaded into the new model",
          lambda: a5_answers(load=False), "load the saved state dict into it"),
    Wrong("check_exercise_A_5", "the original model itself",
          lambda: a5_answers(same_object=True), "should be a new model"),
    Wrong("check_exercise_A_5", "a path that was never written",
          lambda: a5_answers(path="model.pth"), "there is no file at 'model.pth'"),

    Wrong("check_exercise_2_1", "words encoded one by one",
          lambda: ch02_21(ids=BPE.encode("Akwirw") + BPE.encode("ier")), "should be the GPT-2 token ids"),
    Wrong("check_exercise_2_1", "pieces as bytes",
          lambda: ch02_21(pieces=[BPE.decode_single_token_bytes(i) for i in BPE.encode("Akwirw ier")]),
          "should be a list of strings"),
    Wrong("check_exercise_2_1", "the whole text as the pieces",
          lambda: ch02_21(pieces=BPE.decode(BPE.encode("Akwirw ier"))), "should be a list of strings"),
    Wrong("check_exercise_2_1", "pieces joined with spaces",
          lambda: ch02_21(decoded=" ".join(ch02_21()["pieces"])), "decoding all ids at once"),
    Wrong("check_exercise_2_2", "a shuffled loader",
          lambda: ch02_22(batch_8_2=first_batch(8, 2, shuffle=True)), "stride=2 and shuffle=False"),
    Wrong("check_exercise_2_2", "stride equal to max_length",
          lambda: ch02_22(batch_8_2=first_batch(8, 8)), "stride=2 and shuffle=False"),
    Wrong("check_exercise_2_2", "the stride as the overlap", lambda: ch02_22(overlap_8_2=2), "how far does the window"),
    Wrong("check_exercise_2_2", "only the inputs of the batch",
          lambda: ch02_22(batch_2_2=first_batch(2, 2)[0]), "the pair (inputs, targets)"),
    Wrong("check_exercise_2_3", "the special tokens not counted",
          lambda: ch02_23(count_specials=False), "also holds the special tokens"),
    Wrong("check_exercise_2_3", "the special tokens in the other order",
          lambda: ch02_23(special_tokens=("<|unk|>", "<|endoftext|>")), "append <|endoftext|> first"),
    Wrong("check_exercise_2_3", "the unknown words sorted", lambda: ch02_23(order=sorted), "in order"),
    Wrong("check_exercise_2_4", "floor division plus one",
          lambda: ch02_24(windows_floor_plus_one), "the one extra token each target needs"),
    Wrong("check_exercise_2_4", "floor division", lambda: ch02_24(windows_floor), "the one extra token"),
    Wrong("check_exercise_2_4", "the Verdict count for stride 256",
          lambda: ch02_24(stride=256), "max_length=256, stride=128"),
    Wrong("check_exercise_2_4", "counts that claim to equal anything",
          lambda: ch02_24(lambda *args: Agrees(0)), "the one extra token"),
    Wrong("check_exercise_2_5", "a position embedding with a row per token id",
          lambda: ch02_25(pos_rows=50257), "one row per position"),
    Wrong("check_exercise_2_5", "no position embeddings added",
          lambda: ch02_25(add_positions=False), "plus the position embeddings"),
    Wrong("check_exercise_2_5", "only the token embedding counted",
          lambda: ch02_25(count=("token",)), "every trainable number in both"),

    Wrong("check_exercise_3_1", "the matrices reshaped instead of transposed",
          lambda: ch03_31(how="reshape"), "in the wrong arrangement"),
    Wrong("check_exercise_3_1", "the (d_in, d_out) matrices used as weights",
          lambda: ch03_31(how="parameter"), "nn.Linear stores a (d_out, d_in) matrix"),
    Wrong("check_exercise_3_1", "bias left on", lambda: ch03_31(qkv_bias=True), "use qkv_bias=False"),
    Wrong("check_exercise_3_1", "query and key matrices swapped",
          lambda: ch03_31(swap_query_key=True), "still give different outputs"),
    Wrong("check_exercise_3_2", "d_out=2 per head", lambda: ch03_32(d_out=2), "what must each head's d_out be"),
    Wrong("check_exercise_3_2", "MultiHeadAttention instead of the wrapper",
          lambda: ch03_32(cls="mha", d_out=2), "should be a MultiHeadAttentionWrapper"),
    Wrong("check_exercise_3_2", "dropout left on", lambda: ch03_32(dropout=0.5), "asks for no dropout"),
    Wrong("check_exercise_3_2", "GPT-2's context length", lambda: ch03_32(context_length=1024), "context_length=6"),
    Wrong("check_exercise_3_3", "no dropout", lambda: ch03_33(dropout=0.0), "with p=0.1"),
    Wrong("check_exercise_3_3", "the mask buffer counted",
          lambda: ch03_33(count=lambda m: sum(t.numel() for t in m.state_dict().values())),
          "you counted the causal mask"),
    Wrong("check_exercise_3_3", "query/key/value biases", lambda: ch03_33(qkv_bias=True), "without bias"),
    Wrong("check_exercise_3_3", "the output projection's bias forgotten",
          lambda: ch03_33(count=lambda m: num_params(m) - 768), "the output projection's bias"),
    Wrong("check_exercise_3_4", "one bias vector", lambda: dict(extra_params_with_qkv_bias=768),
          "how long is each bias vector"),
    Wrong("check_exercise_3_4", "a bias per weight", lambda: dict(extra_params_with_qkv_bias=3 * 768 * 768),
          "which layers get a bias"),
    Wrong("check_exercise_3_5", "a window one token too long",
          lambda: ch03_35(lambda n, w: sliding_window_mask(n, w + 1)), "should see tokens"),
    Wrong("check_exercise_3_5", "the causal mask only",
          lambda: ch03_35(lambda n, w: torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)),
          "should see tokens"),
    Wrong("check_exercise_3_5", "True where attention is allowed",
          lambda: ch03_35(lambda n, w: ~sliding_window_mask(n, w)), "should see tokens"),
    Wrong("check_exercise_3_5", "a float mask",
          lambda: ch03_35(lambda n, w: sliding_window_mask(n, w).float()), "return a boolean tensor"),

    Wrong("check_exercise_4_1", "the two counts swapped", lambda: ch04_41(swap=True), "ff_params is not"),
    Wrong("check_exercise_4_1", "the mask buffer counted",
          lambda: ch04_41(count=lambda m: sum(t.numel() for t in m.state_dict().values())),
          "the causal mask is a buffer"),
    Wrong("check_exercise_4_2", "the untied parameter count", lambda: ch04_42(tie_embeddings=False),
          "count a shared tensor once"),
    Wrong("check_exercise_4_2", "no query/key/value biases", lambda: ch04_42(qkv_bias=False), "qkv_bias=True"),
    Wrong("check_exercise_4_2", "float32 instead of bfloat16 bytes",
          lambda: ch04_42(bytes_per_number=4), "a bfloat16 number takes 2 bytes"),
    Wrong("check_exercise_4_2", "a megabyte of 10**6 bytes",
          lambda: ch04_42(megabyte=10 ** 6), "1 MB is 1024 ** 2 bytes"),
    Wrong("check_exercise_4_2", "one model missing",
          lambda: ch04_42(sizes=dict(list(gpt.GPT2_SIZES.items())[:3])), "needs exactly the keys"),
    Wrong("check_exercise_4_3", "GPTConfig without the new fields",
          lambda: dict(config_class=gpt.GPTConfig, model_class=gpt.GPTModel), "the config class needs the fields"),
    Wrong("check_exercise_4_3", "the new rates never used",
          lambda: dict(config_class=GPTConfigDropouts, model_class=gpt.GPTModel), "which of the three rates"),
    Wrong("check_exercise_4_3", "attention and shortcut rates swapped",
          lambda: dict(config_class=GPTConfigDropouts,
                       model_class=model_class(attention_rate="drop_rate_shortcut", shortcut_rate="drop_rate_attn")),
          "which of the three rates"),
    Wrong("check_exercise_4_3", "a new dropout module beside the existing one",
          lambda: dict(config_class=GPTConfigDropouts, model_class=model_class(extra_module=True)),
          "keep GPTModel's dropout modules"),
    Wrong("check_exercise_4_3", "one rate everywhere, made to claim to equal any rate",
          lambda: dict(config_class=GPTConfigDropouts, model_class=model_class(rate=lambda p: AgreesFloat(0.5))),
          "which of the three rates"),

    Wrong("check_exercise_5_1", "logits multiplied by the temperature",
          lambda: ch05_51(divide=False), "divide, then softmax"),
    Wrong("check_exercise_5_1", "the count as a tensor", lambda: ch05_51(as_int=False), "should be a Python int"),
    Wrong("check_exercise_5_1", "drawn at temperature 0.5", lambda: ch05_51(draw_from="cold"), "far from what"),
    Wrong("check_exercise_5_1", "an unseeded run", lambda: ch05_51(seed=0), "not the one seed 123 gives"),
    Wrong("check_exercise_5_1", "one draw per multinomial call",
          lambda: ch05_51(one_call=False), "with one torch.multinomial call"),
    Wrong("check_exercise_5_2", "sampling at temperature 1", lambda: ch05_52(temperature=1.0, top_k=None),
          "is not the greedy continuation"),
    Wrong("check_exercise_5_2", "top_k=2 at temperature 2", lambda: ch05_52(temperature=2.0, top_k=2),
          "is not the greedy continuation"),
    Wrong("check_exercise_5_2", "10 new tokens", lambda: ch05_52(max_new_tokens=10), "with 20 new tokens"),
    Wrong("check_exercise_5_3", "the optimizer state not loaded",
          lambda: ch05_53(load_optimizer=False), "it started from scratch"),
    Wrong("check_exercise_5_3", "the model weights not loaded",
          lambda: ch05_53(load_model=False), "far from the checkpoint's weights"),
    Wrong("check_exercise_5_3", "loaded but not trained", lambda: ch05_53(epochs=0), "train it for one epoch"),
    Wrong("check_exercise_5_3", "two epochs", lambda: ch05_53(epochs=2), "exactly one epoch"),
    Wrong("check_exercise_5_3", "a new optimizer that never ran",
          lambda: ch05_53(load_optimizer=False, epochs=0), "holds no state"),
    Wrong("check_exercise_5_3", "the first model's optimizer",
          lambda: ch05_53(optimizer="first"), "does not optimize the parameters of `resumed_model`"),
    Wrong("check_exercise_5_4", "an untrained model of the same size",
          lambda: ch05_54(model="untrained"), "does not hold GPT-2 124M's weights"),
    Wrong("check_exercise_5_4", "the 355M model", lambda: ch05_54(model="355M"), "does not hold GPT-2 124M's weights"),
    Wrong("check_exercise_5_4", "only the first batch", lambda: ch05_54(num_batches=1), "does not match"),
    Wrong("check_exercise_5_4", "training and validation swapped", lambda: ch05_54(swap=True), "does not match"),
    Wrong("check_exercise_5_5", "the 124M model", lambda: ch05_55(model_size="124M", model="124M", writer="124M"),
          "one of the larger GPT-2 sizes"),
    Wrong("check_exercise_5_5", "the 124M model passed as the 355M one",
          lambda: ch05_55(model="124M", writer="124M"), "does not hold GPT-2 355M's weights"),
    Wrong("check_exercise_5_5", "a size that was never loaded",
          lambda: ch05_55(model_size="774M", model="124M", writer="124M"), "there is no gpt2/774M/model.safetensors"),
    Wrong("check_exercise_5_5", "only the new tokens decoded", lambda: ch05_55(with_prompt=False),
          "begins with the prompt"),
    Wrong("check_exercise_5_5", "sampled at temperature 1", lambda: ch05_55(temperature=1.0),
          "greedy continuation"),
    Wrong("check_exercise_5_5", "10 new tokens", lambda: ch05_55(max_new_tokens=10), "max_new_tokens=20"),

    Wrong("check_exercise_6_1", "padded to the longest training message", lambda: ch06_61(max_length=None),
          "pad them to the model's context length"),
    Wrong("check_exercise_6_1", "one token short of the context", lambda: ch06_61(max_length=1023, val_max_length=1023),
          "pad them to the model's context length"),
    Wrong("check_exercise_6_1", "validation padded to its own longest message", lambda: ch06_61(val_max_length=None),
          "the messages of `val_dataset_full` are"),
    Wrong("check_exercise_6_1", "padded with token 0", lambda: ch06_61(pad=0), "is not padded with <|endoftext|>"),
    Wrong("check_exercise_6_1", "batches of 16", lambda: ch06_61(batch_size=16), "a batch of `train_loader_full` has"),
    Wrong("check_exercise_6_1", "the last, incomplete batch kept", lambda: ch06_61(drop_last=False),
          "should drop its last, incomplete batch"),
    Wrong("check_exercise_6_1", "the training loader not shuffled", lambda: ch06_61(shuffle=False),
          "serves the messages in the order of the file"),
    Wrong("check_exercise_6_1", "a loader over the validation messages", lambda: ch06_61(loader_over="validation"),
          "should serve the messages of `train_dataset_full`"),
    Wrong("check_exercise_6_1", "a list of batches instead of a loader", lambda: ch06_61(as_list=True),
          "should be a DataLoader"),
    Wrong("check_exercise_6_2", "the chapter's recipe: only the last block trains", lambda: ch06_62(trainable=1),
          "are still frozen"),
    Wrong("check_exercise_6_2", "the optimizer created before unfreezing",
          lambda: ch06_62(optimizer_before_unfreezing=True), "`optimizer_all` does not update"),
    Wrong("check_exercise_6_2", "unfrozen but never trained", lambda: ch06_62(train=False),
          "still holds the pretrained values"),
    Wrong("check_exercise_6_2", "the language-model head kept", lambda: ch06_62(new_head=False, train=False),
          "still has the language-model head"),
    Wrong("check_exercise_6_2", "the position embedding frozen while training, unfrozen afterwards",
          lambda: ch06_62(frozen_while_training=["pos_emb"]),
          "`optimizer_all` never updated 1 of the model's parameter tensors (e.g. pos_emb.weight)"),
    Wrong("check_exercise_6_2", "trained with another optimizer, `optimizer_all` made for the check",
          lambda: ch06_62(optimizer="other"), "`optimizer_all` never updated"),
    Wrong("check_exercise_6_3", "the last position", lambda: dict(first_token_logits=lambda m, x: m(x)[:, -1, :]),
          "returns the scores of the last position"),
    Wrong("check_exercise_6_3", "the chapter's classification_logits unchanged",
          lambda: dict(first_token_logits=classification.classification_logits),
          "returns the scores of the last position"),
    Wrong("check_exercise_6_3", "the first message instead of the first position",
          lambda: dict(first_token_logits=lambda m, x: m(x)[0]), "one row of 2 class scores per message"),
    Wrong("check_exercise_6_3", "the mean over all positions",
          lambda: dict(first_token_logits=lambda m, x: m(x).mean(dim=1)),
          "does not return the first position's scores"),
    Wrong("check_exercise_6_3", "the second position", lambda: dict(first_token_logits=lambda m, x: m(x)[:, 1, :]),
          "does not return the first position's scores"),

    Wrong("check_exercise_7_1", "the Alpaca prompt", lambda: ch07_71(instruction_finetuning.format_prompt),
          "still writes Alpaca's ### headers"),
    Wrong("check_exercise_7_1", "no newline after <|assistant|>", lambda: ch07_71(partial(phi3_prompt, end="")),
          "and a newline"),
    Wrong("check_exercise_7_1", "a line for an empty input",
          lambda: ch07_71(partial(phi3_prompt, input_line="always")), "an empty input adds no line"),
    Wrong("check_exercise_7_1", "the input before the instruction",
          lambda: ch07_71(partial(phi3_prompt, input_first=True)), "after the instruction"),
    Wrong("check_exercise_7_1", "only the prompts counted", lambda: ch07_71(with_output=False),
          "counts only the prompts"),
    Wrong("check_exercise_7_1", "the two counts swapped", lambda: ch07_71(swap=True), "is not the number of tokens"),
    Wrong("check_exercise_7_2", "the chapter's data set, without prompt lengths",
          lambda: ch07_72(masked_dataset_class(pairs=False)), "should be (token_ids, prompt_length) pairs"),
    Wrong("check_exercise_7_2", "the prompt length in characters",
          lambda: ch07_72(masked_dataset_class(length="characters")), "length in characters"),
    Wrong("check_exercise_7_2", "the first answer token masked as well", lambda: ch07_72(collate_fn=masked_collate(0)),
          "the first token of the answer is masked too"),
    Wrong("check_exercise_7_2", "the last prompt token left in", lambda: ch07_72(collate_fn=masked_collate(-2)),
          "mask the targets of all prompt tokens"),
    Wrong("check_exercise_7_2", "the inputs masked instead of the targets",
          lambda: ch07_72(collate_fn=masked_collate(tensor="inputs")), "the inputs should stay"),
    Wrong("check_exercise_7_2", "padding no longer masked",
          lambda: ch07_72(collate_fn=masked_collate(mask_padding=False)), "padding after the first end-of-text"),
    Wrong("check_exercise_7_3", "no LoRA at all", lambda: ch07_73(lora=False), "has no LinearWithLoRA layers"),
    Wrong("check_exercise_7_3", "LoRA on the query and value projections only", lambda: ch07_73(layers="qv"),
          "some linear layers have no LoRA"),
    Wrong("check_exercise_7_3", "the pretrained weights not frozen", lambda: ch07_73(freeze=False),
          "the pretrained weights should be frozen"),
    Wrong("check_exercise_7_3", "all parameters counted", lambda: ch07_73(count="total"),
          "counts all parameters"),
    Wrong("check_exercise_7_3", "the optimizer of another model", lambda: ch07_73(optimizer="other"),
          "does not optimize the LoRA matrices"),
    Wrong("check_exercise_7_3", "not trained", lambda: ch07_73(train=False), "train the model"),
    Wrong("check_exercise_7_3", "a different rank stated", lambda: ch07_73(rank=8), "do not have rank"),
    Wrong("check_exercise_7_3", "GPT-2 small instead of medium", lambda: ch07_73(size="124M"), "is not GPT-2 medium"),
    Wrong("check_exercise_7_3", "GPT-2 large instead of medium", lambda: ch07_73(size="774M"), "is not GPT-2 medium"),
    Wrong("check_exercise_7_3", "a randomly initialised GPT-2 medium",
          lambda: {**ch07_73(), "lora_model": ch07_lora.add_lora(
              ch07_previous.GPTModel(ch07_gpt2("355M").cfg), 16, 16)}, "is not GPT-2 medium"),
    Wrong("check_exercise_7_3", "rank 8 throughout", lambda: ch07_73(rank=8, lora_rank=8),
          "is not the rank the exercise asks for"),
    Wrong("check_exercise_7_3", "alpha 8", lambda: ch07_73(alpha=8), "not made with the alpha"),
    Wrong("check_exercise_7_3", "alpha 32", lambda: ch07_73(alpha=32), "not made with the alpha"),
    Wrong("check_exercise_7_3", "chapter 5's learning rate", lambda: ch07_73(lr=4e-4), "learning rate is not"),
    Wrong("check_exercise_7_3", "a learning rate of 1e-4", lambda: ch07_73(lr=1e-4), "learning rate is not"),
    Wrong("check_exercise_7_3", "no weight decay", lambda: ch07_73(weight_decay=0.0), "weight decay is not"),
    Wrong("check_exercise_7_3", "AdamW's default weight decay", lambda: ch07_73(weight_decay=0.01),
          "weight decay is not"),
    Wrong("check_exercise_7_3", "Adam instead of AdamW", lambda: ch07_73(optimizer_class=torch.optim.Adam),
          "the exercise uses the chapter's optimizer, AdamW"),
    Wrong("check_exercise_7_3", "the model handed over as a state dict",
          lambda: {**ch07_73(), "lora_model": ch07_73()["lora_model"].state_dict()}, "should be a model"),
    Wrong("check_exercise_7_3", "the count as a tensor",
          lambda: {**ch07_73(), "trainable_params": torch.tensor(ch07_73()["trainable_params"])},
          "should be a Python int"),
]

CORRECT_ANSWERS = {
    "check_exercise_A_1": lambda: dict(num_params=(12 * 64 + 64) + 64 * 64 + (64 * 4 + 4), num_biases=64 + 4),
    "check_exercise_A_2": a2_gradients,
    "check_exercise_A_3": a3_answers,
    "check_exercise_A_4": lambda: dict(rings_model=a4_trained(16)),
    "check_exercise_A_5": a5_answers,
    "check_exercise_2_1": ch02_21,
    "check_exercise_2_2": ch02_22,
    "check_exercise_2_3": ch02_23,
    "check_exercise_2_4": ch02_24,
    "check_exercise_2_5": ch02_25,
    "check_exercise_3_1": ch03_31,
    "check_exercise_3_2": ch03_32,
    "check_exercise_3_3": ch03_33,
    "check_exercise_3_4": lambda: dict(extra_params_with_qkv_bias=3 * 768),
    "check_exercise_3_5": lambda: ch03_35(sliding_window_mask),
    "check_exercise_4_1": ch04_41,
    "check_exercise_4_2": ch04_42,
    "check_exercise_4_3": lambda: dict(config_class=GPTConfigDropouts, model_class=model_class()),
    "check_exercise_5_1": ch05_51,
    "check_exercise_5_2": ch05_52,
    "check_exercise_5_3": ch05_53,
    "check_exercise_5_4": ch05_54,
    "check_exercise_5_5": ch05_55,
    "check_exercise_6_1": ch06_61,
    "check_exercise_6_2": ch06_62,
    "check_exercise_6_3": lambda: dict(first_token_logits=first_position),
    "check_exercise_7_1": ch07_71,
    "check_exercise_7_2": ch07_72,
    "check_exercise_7_3": ch07_73,
}


@pytest.fixture(scope="module", autouse=True)
def scratch_folder(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("exercise-checks"))
        patch.setenv("LLM_COURSE_GPT2_DIR", "gpt2")  # downloads go to gpt2/<size> in the scratch folder
        yield


@pytest.mark.parametrize("wrong", WRONG_ANSWERS, ids=[f"{w.check.removeprefix('check_exercise_')}: {w.mistake}"
                                                      for w in WRONG_ANSWERS])
def test_wrong_answer_fails_with_hint(wrong):
    with pytest.raises(AssertionError, match=re.escape(wrong.hint)):
        CHECKS[wrong.check](**wrong.answers())


# Fragments of a solution that a check's hints must never print: a hint guides, the learner finds the answer.
ANSWERS_NO_HINT_GIVES = {
    "check_exercise_7_2": ["prompt_length - 1", "prompt_length-1", "position prompt_length"],
}


@pytest.mark.parametrize("wrong", [w for w in WRONG_ANSWERS if w.check in ANSWERS_NO_HINT_GIVES],
                         ids=[f"{w.check.removeprefix('check_exercise_')}: {w.mistake}" for w in WRONG_ANSWERS
                              if w.check in ANSWERS_NO_HINT_GIVES])
def test_hint_does_not_give_the_answer(wrong):
    with pytest.raises(AssertionError) as raised:
        CHECKS[wrong.check](**wrong.answers())
    given = [fragment for fragment in ANSWERS_NO_HINT_GIVES[wrong.check] if fragment in str(raised.value)]
    assert not given, f"the hint gives the answer away ({given}): {raised.value}"


def test_exercise_7_3_names_the_checkpoint_it_compares_with(monkeypatch, tmp_path):
    """A model loaded with source="openai" leaves no safetensors file: the hint says which file and source."""
    answers = ch07_73()
    monkeypatch.setenv("LLM_COURSE_GPT2_DIR", str(tmp_path))  # no 355M/model.safetensors there
    with pytest.raises(AssertionError, match=re.escape('default source="hf"')):
        CHECKS["check_exercise_7_3"](**answers)


@pytest.mark.parametrize("check", CORRECT_ANSWERS)
def test_correct_answer_passes(check, capsys):
    answers = CORRECT_ANSWERS[check]()
    capsys.readouterr()  # forget what building the answers printed
    CHECKS[check](**answers)
    assert capsys.readouterr().out.startswith("Correct")


def test_every_check_has_wrong_and_correct_answers():
    checks = {node.name for path in CHECK_FILES for node in ast.parse(path.read_text(encoding="utf-8")).body
              if isinstance(node, ast.FunctionDef) and node.name.startswith("check_")}
    assert checks == set(CHECKS), "a folder's exercise_checks.py is not imported above"
    assert checks - {w.check for w in WRONG_ANSWERS} == set(), "checks without a wrong answer"
    assert checks - set(CORRECT_ANSWERS) == set(), "checks without a correct answer"
