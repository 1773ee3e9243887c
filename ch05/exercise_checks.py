"""Automatic feedback for the chapter 5 exercises (exercises.ipynb).

Each check recomputes the expected result its own way, prints a short confirmation when the answer is right and
raises AssertionError with a hint (never the answer) when it is wrong or still missing.
"""

import math

import tiktoken
import torch
from safetensors import safe_open

from gpt_download import default_models_dir
from pretraining import create_train_val_loaders, load_checkpoint
from previous_chapters import GPTModel, generate_greedy, load_verdict

PROMPT = "Every effort moves you"


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
    # The same draws again, from a generator of their own, so that the learner's random state stays untouched.
    seeded = torch.Generator().manual_seed(123)
    draws = torch.multinomial(torch.as_tensor(probas_hot).detach().cpu(), 1000, replacement=True, generator=seeded)
    assert silent_draws_hot == int((draws == 0).sum()), \
        ("`silent_draws_hot` is a plausible count, but not the one seed 123 gives: call torch.manual_seed(123) "
         "right before drawing all 1,000 samples with one torch.multinomial call")
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
    assert steps, ("`resumed_optimizer` holds no state: load the checkpoint's optimizer state into it, then train "
                   "one epoch with it")
    optimized = {id(p) for group in resumed_optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in resumed_model.parameters()), \
        "`resumed_optimizer` does not optimize the parameters of `resumed_model`: create it for the new model"
    checkpoint = {name: value.detach() for name, value in load_checkpoint(checkpoint_path).named_parameters()}
    resumed = {name: value.detach().cpu() for name, value in resumed_model.named_parameters()}
    assert resumed.keys() == checkpoint.keys() and all(resumed[n].shape == v.shape for n, v in checkpoint.items()), \
        "`resumed_model` should be a GPTModel with the checkpoint's configuration (SMALL_CONFIG)"
    change = math.sqrt(sum((resumed[name] - value).square().sum().item() for name, value in checkpoint.items()))
    size = math.sqrt(sum(value.square().sum().item() for value in checkpoint.values()))
    assert change > 0, "`resumed_model` still has the checkpoint's weights: train it for one epoch"
    # One epoch at a small learning rate moves the weights by well under 1% of their size; a model that did not
    # start from the checkpoint's weights differs from them by about their whole size.
    assert change < 0.1 * size, \
        ("`resumed_model` is far from the checkpoint's weights: it did not start from them. Load the checkpoint "
         "into the new model before training")
    assert steps[0] != len(train_loader), \
        ("`resumed_optimizer` counts only this epoch's steps: it started from scratch. Load the optimizer state "
         "from the checkpoint too")
    assert steps[0] == saved_steps + len(train_loader), \
        f"`resumed_optimizer` should have taken the checkpoint's steps plus exactly one epoch ({len(train_loader)})"
    print(f"Correct: training continued from step {saved_steps} to step {steps[0]}.")


def _assert_gpt2(model, size, name):
    """Check that ``model`` holds GPT-2 ``size`` as ``load_gpt2(size, source="hf")`` loads it.

    A few tensors are read one at a time from the checkpoint file load_gpt2 downloaded (into gpt2/<size>, or under
    $LLM_COURSE_GPT2_DIR) and compared with the model's: loading a second copy of the model for comparison would
    double the memory the exercise needs.
    """
    assert isinstance(model, GPTModel), \
        f"`{name}` should be the GPTModel that load_gpt2 returns, not {type(model).__name__}"
    path = default_models_dir() / size / "model.safetensors"
    assert path.is_file(), f"there is no {path.as_posix()}: load the model with load_gpt2({size!r}, source='hf')"
    with safe_open(path, framework="pt") as checkpoint:
        for key, tensor in [("wpe.weight", model.pos_emb.weight), ("ln_f.weight", model.final_norm.scale),
                            ("ln_f.bias", model.final_norm.shift)]:
            expected = checkpoint.get_tensor(key)
            assert tensor.shape == expected.shape and torch.equal(tensor.detach().cpu(), expected), \
                (f"`{name}` does not hold GPT-2 {size}'s weights (its {key} differs from the checkpoint's): load "
                 f"it with load_gpt2({size!r}, source='hf')")


def check_exercise_5_4(gpt2, gpt2_train_loss, gpt2_val_loss):
    """GPT-2 124M's training and validation losses on The Verdict, with the chapter's loaders."""
    _require(gpt2, "gpt2")
    _require(gpt2_train_loss, "gpt2_train_loss")
    _require(gpt2_val_loss, "gpt2_val_loss")
    _assert_gpt2(gpt2, "124M", "gpt2")
    device = next(gpt2.parameters()).device
    with torch.random.fork_rng(devices=[]):  # the learner's random state stays as it was
        torch.manual_seed(123)
        train_loader, val_loader = create_train_val_loaders(load_verdict(), context_length=256, batch_size=2)
        train_batches = list(train_loader)  # the shuffled order is drawn here, right after the seed

    def mean_negative_log_likelihood(batches):  # independent of batch_loss: log-softmax written out
        losses = []
        with torch.no_grad():
            for inputs, targets in batches:
                logits = gpt2(inputs.to(device))
                log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
                losses.append(-log_probs.gather(-1, targets.to(device).unsqueeze(-1)).mean().item())
        return sum(losses) / len(losses)

    for answer, name, batches in [(gpt2_train_loss, "gpt2_train_loss", train_batches),
                                  (gpt2_val_loss, "gpt2_val_loss", val_loader)]:
        assert abs(float(answer) - mean_negative_log_likelihood(batches)) < 1e-3, \
            (f"`{name}` does not match: use loader_loss on all batches of the chapter's loaders (context 256, "
             "batch 2, created right after torch.manual_seed(123)) with the GPT-2 124M model")
    print("Correct: these are GPT-2 124M's losses on The Verdict.")


def check_exercise_5_5(model_size, medium, medium_text):
    """Greedy text of a larger GPT-2 size, written by the learner's own model ``medium``."""
    _require(model_size, "model_size")
    _require(medium, "medium")
    _require(medium_text, "medium_text")
    assert model_size in ("355M", "774M", "1558M"), "`model_size` should name one of the larger GPT-2 sizes"
    _assert_gpt2(medium, model_size, "medium")
    assert isinstance(medium_text, str) and medium_text.startswith(PROMPT), \
        f"`medium_text` should be the decoded output of generate, which begins with the prompt {PROMPT!r}"
    tokenizer = tiktoken.get_encoding("gpt2")
    prompt = torch.tensor([tokenizer.encode(PROMPT)], device=next(medium.parameters()).device)
    expected = tokenizer.decode(generate_greedy(medium, prompt, 20, medium.cfg.context_length)[0].tolist())
    assert medium_text == expected, \
        (f"`medium_text` is not GPT-2 {model_size}'s greedy continuation of {PROMPT!r} with 20 new tokens: "
         "use temperature 0 (the default of generate) and max_new_tokens=20")
    print(f"Correct: GPT-2 {model_size} ({sum(p.numel() for p in medium.parameters()):,} parameters) wrote it.")
