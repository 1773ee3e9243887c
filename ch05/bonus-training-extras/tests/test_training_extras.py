"""Tests of the learning-rate schedule, gradient clipping and the training function that combines them."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from previous_chapters import GPTConfig, GPTModel
from training_extras import ScheduledClippedOptimizer, gradient_norm, learning_rate, train_with_extras

TINY = GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


@pytest.mark.parametrize("step, expected", [
    (0, 0.0001),  # the initial learning rate
    (5, 0.00055),  # halfway through warmup: halfway between initial and peak
    (10, 0.001),  # end of warmup: the peak
    (60, 0.00055),  # halfway through the decay: cos(pi/2) = 0, halfway between peak and minimum
    (35, 0.0001 + 0.0009 * (2 + 2 ** 0.5) / 4),  # a quarter of the decay: (1 + cos(pi/4)) / 2 of the way
    (110, 0.0001),  # the end: the minimum
    (500, 0.0001),  # and it stays there
])
def test_schedule_at_key_steps(step, expected):
    lr = learning_rate(step, peak_lr=0.001, warmup_steps=10, total_steps=110, initial_lr=0.0001, min_lr=0.0001)
    assert lr == pytest.approx(expected, rel=1e-12)


def test_schedule_rises_then_falls():
    lrs = [learning_rate(s, peak_lr=1.0, warmup_steps=20, total_steps=100) for s in range(101)]
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21]))
    assert all(a > b for a, b in zip(lrs[20:100], lrs[21:101]))
    assert max(lrs) == lrs[20] == 1.0 and lrs[0] == 0.0 and lrs[100] == pytest.approx(0.0, abs=1e-15)


def test_schedule_without_warmup_or_decay():
    assert learning_rate(0, peak_lr=0.5, warmup_steps=0, total_steps=10) == 0.5
    assert learning_rate(9, peak_lr=0.5, warmup_steps=10, total_steps=10) == pytest.approx(0.45)
    assert learning_rate(10, peak_lr=0.5, warmup_steps=10, total_steps=10, min_lr=0.1) == 0.1


def test_schedule_rejects_warmup_longer_than_training():
    with pytest.raises(ValueError, match="warmup_steps"):
        learning_rate(0, peak_lr=0.1, warmup_steps=20, total_steps=10)


def model_with_gradients(scale):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    inputs = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    (model(inputs).sum() * scale).backward()
    return model


def test_gradient_norm_is_norm_of_all_gradients_concatenated():
    model = model_with_gradients(1.0)
    flat = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert gradient_norm(model) == pytest.approx(math.sqrt(sum(g * g for g in flat.tolist())), rel=1e-5)


@pytest.mark.parametrize("scale", [0.001, 1.0, 1000.0])
def test_clipping_bounds_the_norm_and_keeps_the_direction(scale):
    model = model_with_gradients(scale)
    before = [p.grad.clone() for p in model.parameters()]
    norm_before = gradient_norm(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    norm_after = gradient_norm(model)
    assert norm_after <= 1.0 + 1e-5
    assert norm_after == pytest.approx(min(norm_before, 1.0), rel=1e-5)
    factor = norm_after / norm_before
    for old, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.grad, old * factor)


def test_wrapped_optimizer_sets_scheduled_lr_and_clips_before_each_step():
    model = model_with_gradients(1000.0)
    sgd = torch.optim.SGD(model.parameters(), lr=123.0)
    wrapped = ScheduledClippedOptimizer(sgd, model, peak_lr=0.1, warmup_steps=2, total_steps=4, max_norm=0.5)
    weights = [p.detach().clone() for p in model.parameters()]
    wrapped.step()  # step 0: learning rate 0, so nothing may move
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    wrapped.step()  # step 1: half the peak, with the clipped gradients
    update = torch.cat([(w - p.detach()).flatten() for w, p in zip(weights, model.parameters())])
    assert update.norm().item() == pytest.approx(0.05 * 0.5, rel=1e-4)  # lr * max_norm
    assert wrapped.log["lr"] == [0.0, 0.05]
    assert wrapped.log["grad_norm"][0] > 0.5 and wrapped.log["clipped_grad_norm"][0] == pytest.approx(0.5)


class _Tokenizer:
    def encode(self, text, allowed_special=()):
        return [0]

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_train_with_extras_follows_the_schedule_and_learns():
    ids = torch.randint(0, TINY.vocab_size, (12, TINY.context_length + 1), generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=3, shuffle=True, drop_last=True)
    torch.manual_seed(123)
    model = GPTModel(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    history = train_with_extras(model, loader, loader, optimizer, "cpu", num_epochs=5, eval_freq=4, eval_iter=4,
                                start_context="", tokenizer=_Tokenizer(), peak_lr=0.01, warmup_steps=4,
                                initial_lr=0.001, min_lr=0.0001, max_norm=0.2)
    expected = [learning_rate(s, 0.01, 4, 20, 0.001, 0.0001) for s in range(20)]
    assert history["lr"] == expected
    assert all(after <= 0.2 + 1e-6 for after in history["clipped_grad_norm"])
    assert any(before > 0.2 for before in history["grad_norm"])  # clipping really happened
    assert history["train_loss"][-1] < history["train_loss"][0]
