"""Low-rank adaptation (LoRA) from scratch: finetune a large model by training two small matrices per layer.

A linear layer computes ``x @ W.T``. LoRA freezes ``W`` and learns a correction of rank ``r``:
``W + (alpha / r) * B @ A`` with ``A`` (r, in_features) and ``B`` (out_features, r), so the layer computes
``x @ W.T + (alpha / r) * x @ A.T @ B.T``. ``A`` starts random and ``B`` at zero: before any training the model is
exactly the model it was. After training, ``merge_lora`` folds the correction into ``W``, so inference costs
nothing extra.

- ``LoRALayer``: the low-rank update on its own;
- ``LinearWithLoRA``: a frozen ``nn.Linear`` plus a ``LoRALayer``;
- ``add_lora(model, rank, alpha)``: freeze a model and put LoRA on every ``nn.Linear`` in it;
- ``merge_lora(model)``: replace every ``LinearWithLoRA`` by a plain ``nn.Linear`` with the merged weight;
- ``count_parameters(model)``: (trainable, total) parameter counts.
"""

import math

import torch
import torch.nn as nn


class LoRALayer(nn.Module):
    """The update ``(alpha / rank) * x @ A.T @ B.T`` of a layer mapping in_features to out_features."""

    def __init__(self, in_features, out_features, rank, alpha):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.A = nn.Parameter(torch.empty(rank, in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the initialisation nn.Linear gives its weights
        self.B = nn.Parameter(torch.zeros(out_features, rank))  # zero: the update starts as a no-op
        self.scaling = alpha / rank

    def forward(self, x):  # x: (..., in_features)
        return self.scaling * (x @ self.A.T @ self.B.T)  # (..., rank) first, then (..., out_features)

    def extra_repr(self):
        rank, in_features = self.A.shape
        return f"in_features={in_features}, out_features={self.B.shape[0]}, rank={rank}, scaling={self.scaling}"


class LinearWithLoRA(nn.Module):
    """``linear(x) + lora(x)``: an existing linear layer and a LoRA update of the same shape."""

    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)
        self.lora.to(device=linear.weight.device, dtype=linear.weight.dtype)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def add_lora(model, rank, alpha):
    """Freeze every parameter of ``model``, then wrap each ``nn.Linear`` in it in a ``LinearWithLoRA`` (in place).

    Afterwards only the LoRA matrices train. Returns ``model``.
    """
    if any(isinstance(module, LinearWithLoRA) for module in model.modules()):
        raise ValueError("the model already has LoRA layers; add LoRA to a model once")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, linear in linears:
        replace_submodule(model, name, LinearWithLoRA(linear, rank, alpha))
    return model


def merge_lora(model):
    """Replace every ``LinearWithLoRA`` in ``model`` by its ``nn.Linear`` with weight ``W + scaling * B @ A``.

    The merged weight is a new tensor, so a weight the layer shared (GPT-2's output head and token embedding) stays
    unchanged where else it is used. Works in place; returns ``model``.
    """
    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LinearWithLoRA)]
    for name, module in wrapped:
        linear, lora = module.linear, module.lora
        with torch.no_grad():
            merged = linear.weight + lora.scaling * (lora.B @ lora.A)  # (out_features, in_features)
        linear.weight = nn.Parameter(merged, requires_grad=linear.weight.requires_grad)
        replace_submodule(model, name, linear)
    return model


def replace_submodule(model, name, new):
    """Put ``new`` where ``model``'s submodule with the dotted ``name`` (e.g. ``trf_blocks.0.att.W_query``) was."""
    if name == "":
        raise ValueError("add_lora and merge_lora change the layers inside a model, not the model itself")
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, new)


def count_parameters(model):
    """(trainable, total) numbers of parameters of ``model``; a tensor shared by two layers counts once."""
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)
