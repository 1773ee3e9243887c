"""Three refinements of chapter 5's training loop that large pretraining runs rely on.

* Learning-rate **warmup**: start with a small learning rate and raise it linearly, so the first updates, made
  while the weights are random and the optimizer's running averages are still empty, cannot be huge.
* **Cosine decay**: after warmup, lower the learning rate along half a cosine wave to a minimum, so training
  takes large steps early and settles with small ones at the end.
* **Gradient clipping**: if the norm of all gradients together exceeds a threshold, scale them down to it; the
  direction of the update is kept, its size is bounded.

``ScheduledClippedOptimizer`` wraps an optimizer so that every ``step()`` first sets the learning rate and clips
the gradients; chapter 5's ``train`` loop then runs unchanged, and ``train_with_extras`` does just that. The
notebook training-extras.ipynb develops this code (a test keeps the two identical).
"""

import math

import torch

from previous_chapters import train


def learning_rate(step, peak_lr, warmup_steps, total_steps, initial_lr=0.0, min_lr=0.0):
    """Learning rate at optimizer step ``step`` (counting from 0): linear warmup, then cosine decay.

    It rises from ``initial_lr`` at step 0 to ``peak_lr`` at ``warmup_steps``, then falls along half a cosine to
    ``min_lr`` at ``total_steps`` and stays there.
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, got warmup_steps={warmup_steps}, "
                         f"total_steps={total_steps}")
    if step < warmup_steps:
        return initial_lr + (peak_lr - initial_lr) * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps == 0 else min((step - warmup_steps) / decay_steps, 1.0)  # 0 -> 1
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def gradient_norm(model):
    """The L2 norm of all gradients of ``model`` taken together as one long vector."""
    squares = [p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]
    return torch.stack(squares).sum().sqrt().item()


class ScheduledClippedOptimizer:
    """Wrap ``optimizer`` so that each ``step()`` sets the scheduled learning rate and clips the gradients first.

    For every step it records the learning rate and the gradient norm before and after clipping (in ``log``).
    """

    def __init__(self, optimizer, model, peak_lr, warmup_steps, total_steps, initial_lr=0.0, min_lr=0.0,
                 max_norm=1.0):
        self.optimizer, self.model, self.max_norm = optimizer, model, max_norm
        self.schedule = dict(peak_lr=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                             initial_lr=initial_lr, min_lr=min_lr)
        self.steps_taken = 0
        self.log = {"lr": [], "grad_norm": [], "clipped_grad_norm": []}

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        lr = learning_rate(self.steps_taken, **self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.log["lr"].append(lr)
        self.log["grad_norm"].append(gradient_norm(self.model))
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.max_norm)
        self.log["clipped_grad_norm"].append(gradient_norm(self.model))
        self.optimizer.step()
        self.steps_taken += 1


def train_with_extras(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                      start_context, tokenizer, peak_lr, warmup_steps, initial_lr=0.0, min_lr=0.0, max_norm=1.0):
    """Chapter 5's training loop with learning-rate warmup, cosine decay and gradient clipping.

    The schedule spans the whole run (``num_epochs`` passes over ``train_loader``). Returns ``train``'s
    evaluation history extended by the per-step learning rates and gradient norms.
    """
    total_steps = num_epochs * len(train_loader)
    scheduled = ScheduledClippedOptimizer(optimizer, model, peak_lr, warmup_steps, total_steps, initial_lr,
                                          min_lr, max_norm)
    history = train(model, train_loader, val_loader, scheduled, device, num_epochs, eval_freq, eval_iter,
                    start_context, tokenizer)
    return {**history, **scheduled.log}
