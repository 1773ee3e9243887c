"""Automatic feedback for the chapter 5 exercises (exercises.ipynb).

Each check recomputes the expected result its own way, prints a short confirmation when the answer is right and
raises AssertionError with a hint (never the answer) when it is wrong or still missing.
"""

import math

import tiktoken
import torch

from gpt_download import load_gpt2
from pretraining import create_train_val_loaders, load_checkpoint
from previous_chapters import generate_greedy, load_verdict


def _require(answer, name):
    assert answer is not None, f"`{name}` is still None: fill in the answer cell above and run it."


def check_exercise_5_1(toy_logits, probas_cold, probas_hot, silent_draws_hot):
    """Softmax at temperature 0.5 and 3.0, and how often 'silent' (token 0) came up in 1,000 draws at 3.0."""
    for answer, name in [(probas_cold, "probas_cold"), (probas_hot, "probas_hot"),
                         (silent_draws_hot, "silent_draws_hot")]:
        _require(answer, name)
    for answer, name, temperature in [(probas_cold, "probas_cold", 0.5), (probas_hot, "probas_hot", 3.0)]:
        weights = [math.exp(logit / temperature) for logit in toy_logits.tolist()]
        expected = [w / sum(weights) for w in weights]
        got = torch.as_tensor(answer, dtype=torch.float64).flatten().tolist()
        assert len(got) == len(expected), f"`{name}` should hold one probability per toy word ({len(expected)})"
        assert all(abs(g - e) < 1e-5 for g, e in zip(got, expected)), \
            f"`{name}` is not the softmax of the toy logits at temperature {temperature}: divide, then softmax"
    p = math.exp(toy_logits[0].item() / 3.0) / sum(math.exp(v / 3.0) for v in toy_logits.tolist())
    spread = 4 * math.sqrt(1000 * p * (1 - p))  # four standard deviations of a binomial count
    assert isinstance(silent_draws_hot, int), "`silent_draws_hot` should be a Python int (a count)"
    assert abs(silent_draws_hot - 1000 * p) <= spread, \
        ("`silent_draws_hot` is far from what sampling 1,000 times at temperature 3.0 gives: sample from "
         "`probas_hot` with torch.multinomial (with replacement) and count token 0")
    print("Correct: a higher temperature moves probability from the favourite to the other words.")


def check_exercise_5_2(model, prompt, greedy_ids, top1_ids):
    """Two deterministic ways of calling generate: temperature 0, and top_k=1 at a high temperature."""
    _require(greedy_ids, "greedy_ids")
    _require(top1_ids, "top1_ids")
    expected = generate_greedy(model, prompt, 20, model.cfg.context_length)
    for answer, name in [(greedy_ids, "greedy_ids"), (top1_ids, "top1_ids")]:
        assert isinstance(answer, torch.Tensor) and answer.shape == expected.shape, \
            f"`{name}` should be generate's output for `prompt` with 20 new tokens, shape {tuple(expected.shape)}"
        assert torch.equal(answer, expected), \
            f"`{name}` is not the greedy continuation: which settings leave a single possible next token?"
    print("Correct: with temperature 0 or a single candidate (top_k=1), decoding is greedy and deterministic.")


def check_exercise_5_3(checkpoint_path, resumed_model, resumed_optimizer, train_loader):
    """One more epoch of training, continued from a model + optimizer checkpoint."""
    _require(resumed_model, "resumed_model")
    _require(resumed_optimizer, "resumed_optimizer")
    saved = torch.load(checkpoint_path, weights_only=True)
    saved_steps = int(next(iter(saved["optimizer"]["state"].values()))["step"])
    steps = [int(s["step"]) for s in resumed_optimizer.state_dict()["state"].values()]
    assert steps, "`resumed_optimizer` has taken no step yet: train one epoch with it"
    assert steps[0] != len(train_loader), \
        ("`resumed_optimizer` counts only this epoch's steps: it started from scratch. Load the optimizer state "
         "from the checkpoint too")
    assert steps[0] == saved_steps + len(train_loader), \
        f"`resumed_optimizer` should have taken the checkpoint's steps plus exactly one epoch ({len(train_loader)})"
    before = load_checkpoint(checkpoint_path)
    changed = any(not torch.equal(a, b.to(a.device)) for a, b in zip(before.state_dict().values(),
                                                                      resumed_model.state_dict().values()))
    assert changed, "`resumed_model` still has the checkpoint's weights: did it train?"
    optimized = {id(p) for group in resumed_optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in resumed_model.parameters()), \
        "`resumed_optimizer` does not optimize the parameters of `resumed_model`"
    print(f"Correct: training continued from step {saved_steps} to step {steps[0]}.")


def check_exercise_5_4(gpt2_train_loss, gpt2_val_loss):
    """GPT-2 124M's training and validation losses on The Verdict, with the chapter's loaders."""
    _require(gpt2_train_loss, "gpt2_train_loss")
    _require(gpt2_val_loss, "gpt2_val_loss")
    model = load_gpt2("124M", source="hf")
    torch.manual_seed(123)
    train_loader, val_loader = create_train_val_loaders(load_verdict(), context_length=256, batch_size=2)

    def mean_negative_log_likelihood(loader):  # independent of batch_loss: log-softmax written out
        losses = []
        with torch.no_grad():
            for inputs, targets in loader:
                logits = model(inputs).double()
                log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
                losses.append(-log_probs.gather(-1, targets.unsqueeze(-1)).mean().item())
        return sum(losses) / len(losses)

    for answer, name, loader in [(gpt2_train_loss, "gpt2_train_loss", train_loader),
                                 (gpt2_val_loss, "gpt2_val_loss", val_loader)]:
        assert abs(float(answer) - mean_negative_log_likelihood(loader)) < 1e-3, \
            (f"`{name}` does not match: use loader_loss on all batches of the chapter's loaders (context 256, "
             "batch 2) with the GPT-2 124M model")
    print("Correct: these are GPT-2 124M's losses on The Verdict.")


def check_exercise_5_5(model_size, medium_text):
    """Greedy text of a larger GPT-2 size."""
    _require(model_size, "model_size")
    _require(medium_text, "medium_text")
    assert model_size in ("355M", "774M", "1558M"), "`model_size` should name one of the larger GPT-2 sizes"
    tokenizer = tiktoken.get_encoding("gpt2")
    model = load_gpt2(model_size, source="hf")
    prompt = torch.tensor([tokenizer.encode("Every effort moves you")])
    expected = tokenizer.decode(generate_greedy(model, prompt, 20, model.cfg.context_length)[0].tolist())
    assert medium_text == expected, \
        (f"`medium_text` is not GPT-2 {model_size}'s greedy continuation of 'Every effort moves you' with 20 new "
         "tokens (decoded including the prompt)")
    print(f"Correct: GPT-2 {model_size} ({sum(p.numel() for p in model.parameters()):,} parameters) wrote it.")
