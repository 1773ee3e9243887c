"""Tests of ch05/pretraining.py: losses against independent computations, decoding properties, reproducible
training and exact resumption from a checkpoint.

Tiny models on random token ids keep the whole file fast.
"""

import math

import pytest
import tiktoken
import torch
from torch.utils.data import DataLoader, TensorDataset

import pretraining
from pretraining import (
    batch_loss,
    choose_device,
    evaluate,
    generate,
    load_checkpoint,
    loader_loss,
    plot_losses,
    save_checkpoint,
    text_to_token_ids,
    token_ids_to_text,
    train,
)
from previous_chapters import GPTConfig, GPTModel, generate_greedy

TINY = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1)


def tiny_model(seed=123, cfg=TINY):
    torch.manual_seed(seed)
    return GPTModel(cfg)


def random_loader(num_windows=12, batch_size=3, shuffle=True, seed=0):
    """Windows of random token ids with targets shifted one ahead, as create_dataloader serves them."""
    ids = torch.randint(0, TINY.vocab_size, (num_windows, TINY.context_length + 1),
                        generator=torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=batch_size, shuffle=shuffle,
                      drop_last=shuffle)


class FixedLogits(torch.nn.Module):
    """A stand-in language model that gives the same next-token scores at every position."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, token_ids):
        return self.logits.expand(*token_ids.shape, -1)


def test_text_token_id_round_trip():
    tokenizer = tiktoken.get_encoding("gpt2")
    ids = text_to_token_ids("Every effort moves you<|endoftext|>", tokenizer)
    assert ids.shape == (1, 5) and ids[0, -1].item() == 50256
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you<|endoftext|>"


def test_batch_loss_is_mean_negative_log_probability_of_targets():
    model = tiny_model().eval()
    inputs, targets = next(iter(random_loader(shuffle=False)))
    with torch.no_grad():
        logits = model(inputs)
        # independent: log-softmax written out, then the target's entry picked position by position
        log_probs = logits - logits.exp().sum(dim=-1, keepdim=True).log()
        expected = -sum(log_probs[b, t, targets[b, t]] for b in range(inputs.shape[0])
                        for t in range(inputs.shape[1])) / targets.numel()
        assert batch_loss(inputs, targets, model, "cpu").item() == pytest.approx(expected.item(), rel=1e-5)


def test_untrained_loss_is_near_uniform_guess():
    """Before training every token is about equally likely, so the loss is close to ln(vocab_size)."""
    with torch.no_grad():
        loss = loader_loss(random_loader(shuffle=False), tiny_model().eval(), "cpu")
    assert abs(loss - math.log(TINY.vocab_size)) < 0.5


def test_loader_loss_averages_the_first_batches():
    model = tiny_model().eval()
    loader = random_loader(shuffle=False)
    with torch.no_grad():
        per_batch = [batch_loss(x, y, model, "cpu").item() for x, y in loader]
        assert loader_loss(loader, model, "cpu") == pytest.approx(sum(per_batch) / len(per_batch))
        assert loader_loss(loader, model, "cpu", num_batches=2) == pytest.approx(sum(per_batch[:2]) / 2)
        assert loader_loss(loader, model, "cpu", num_batches=99) == pytest.approx(sum(per_batch) / len(per_batch))


def test_loader_loss_of_empty_loader_is_a_clear_error():
    empty = DataLoader(TensorDataset(torch.zeros(0, 8, dtype=torch.long), torch.zeros(0, 8, dtype=torch.long)))
    with pytest.raises(ValueError, match="no batches"):
        loader_loss(empty, tiny_model(), "cpu")


def test_evaluate_leaves_model_in_training_mode_and_is_repeatable():
    model = tiny_model()
    loader = random_loader(shuffle=False)
    first = evaluate(model, loader, loader, "cpu", num_batches=2)
    assert model.training
    assert evaluate(model, loader, loader, "cpu", num_batches=2) == first  # dropout was off


def test_temperature_zero_is_greedy():
    model = tiny_model().eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    expected = generate_greedy(model, prompt, 10, TINY.context_length)
    assert torch.equal(generate(model, prompt, 10, TINY.context_length), expected)
    # top-1 sampling leaves a single candidate, so even a high temperature cannot change the choice
    assert torch.equal(generate(model, prompt, 10, TINY.context_length, temperature=5.0, top_k=1), expected)


def test_top_k_never_samples_outside_the_k_best():
    logits = torch.linspace(0, 1, 20)  # token 19 is the best, 18 the second best, ...
    model = FixedLogits(logits)
    torch.manual_seed(0)
    out = generate(model, torch.zeros(1, 1, dtype=torch.long), 300, 4, temperature=10.0, top_k=3)
    assert set(out[0, 1:].tolist()) == {17, 18, 19}
    # without top-k the same flat distribution reaches other tokens (so the check above can fail)
    out = generate(model, torch.zeros(1, 1, dtype=torch.long), 300, 4, temperature=10.0)
    assert not set(out[0, 1:].tolist()) <= {17, 18, 19}


def test_temperature_changes_sampling_frequencies_as_softmax_predicts():
    logits = torch.tensor([2.0, 1.0, 0.0])
    torch.manual_seed(0)
    for temperature in (0.5, 1.0, 3.0):
        out = generate(FixedLogits(logits), torch.zeros(1, 1, dtype=torch.long), 4000, 4, temperature=temperature)
        share_of_best = (out[0, 1:] == 0).float().mean().item()
        weights = [math.exp(v / temperature) for v in (2.0, 1.0, 0.0)]
        assert share_of_best == pytest.approx(weights[0] / sum(weights), abs=0.03)


def test_negative_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_model(), torch.tensor([[1]]), 3, TINY.context_length, temperature=-1.0)


def test_eos_stops_generation_and_pads_finished_rows():
    model = tiny_model().eval()
    prompt = torch.tensor([[1, 2, 3], [7, 8, 9]])
    free = generate(model, prompt, 12, TINY.context_length)
    eos_id = free[0, 3 + 4].item()  # the fifth token the first row generates
    stop = 3 + free[0, 3:].tolist().index(eos_id)  # its first occurrence
    out = generate(model, prompt, 12, TINY.context_length, eos_id=eos_id)
    assert torch.equal(out[0, :stop + 1], free[0, :stop + 1])  # identical up to and including eos ...
    assert (out[0, stop:] == eos_id).all()  # ... then only padding
    second = free[1, 3:].tolist()
    if eos_id in second:  # the other row ends at its own eos; generation stops once both have
        assert out.shape[1] == 3 + max(stop - 3, second.index(eos_id)) + 1
    else:
        assert torch.equal(out[1], free[1])


def test_eos_of_a_single_sequence_ends_generation_early():
    logits = torch.full((10,), -5.0)
    logits[4] = 5.0  # token 4 is (almost) always the choice
    out = generate(FixedLogits(logits), torch.tensor([[0]]), 20, 4, eos_id=4)
    assert out.tolist() == [[0, 4]]


def run(epochs, model=None, optimizer=None, seed=123, device="cpu"):
    """Train a tiny model; returns (model, optimizer, history). Shuffling and dropout both consume randomness."""
    if model is None:
        model = tiny_model(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    loader = random_loader()
    history = train(model, loader, random_loader(shuffle=False), optimizer, device, num_epochs=epochs,
                    eval_freq=1, eval_iter=2, start_context="", tokenizer=_EmptyPromptTokenizer(),
                    sample_tokens=1)
    return model, optimizer, history


class _EmptyPromptTokenizer:
    """Enough of a tokenizer for train()'s per-epoch sample with the tiny vocabulary."""

    def encode(self, text, allowed_special=()):
        return [0]

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_same_seed_gives_identical_loss_sequence():
    _, _, first = run(2)
    _, _, second = run(2)
    assert first == second
    assert first["train_loss"][-1] < first["train_loss"][0]  # it does learn
    _, _, other_seed = run(2, seed=7)
    assert other_seed["train_loss"] != first["train_loss"]


def test_evaluates_after_the_first_step_and_then_every_eval_freq_steps():
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    loader = random_loader()  # 4 batches: 2 epochs are 8 steps
    history = train(model, loader, random_loader(shuffle=False), optimizer, "cpu", num_epochs=2, eval_freq=3,
                    eval_iter=1, start_context="", tokenizer=_EmptyPromptTokenizer(), sample_tokens=1)
    assert history["step"] == [1, 4, 7]
    assert history["epoch"] == [0.25, 1.0, 1.75]
    assert history["tokens_seen"] == [3 * 8, 4 * 3 * 8, 7 * 3 * 8]  # batches of 3 windows of 8 tokens


def test_resuming_from_checkpoint_reproduces_uninterrupted_run(tmp_path):
    uninterrupted_model, _, uninterrupted = run(3)

    model, optimizer, _ = run(2)
    save_checkpoint(tmp_path / "ckpt.pth", model, optimizer)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary file left behind
    torch.manual_seed(999)  # disturb the random state: the checkpoint must restore it
    resumed_model = tiny_model(seed=5)
    resumed_optimizer = torch.optim.AdamW(resumed_model.parameters(), lr=4e-3, weight_decay=0.1)
    load_checkpoint(tmp_path / "ckpt.pth", resumed_model, resumed_optimizer, restore_rng=True)
    _, _, resumed = run(1, resumed_model, resumed_optimizer)

    steps_per_epoch = len(resumed["train_loss"])
    assert resumed["train_loss"] == uninterrupted["train_loss"][-steps_per_epoch:]
    assert resumed["val_loss"] == uninterrupted["val_loss"][-steps_per_epoch:]
    for (name, a), b in zip(uninterrupted_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_without_optimizer_state_or_rng_state_diverges(tmp_path):
    """The control for the test above: both parts of the checkpoint matter."""
    _, _, uninterrupted = run(3)
    model, optimizer, _ = run(2)
    save_checkpoint(tmp_path / "ckpt.pth", model, optimizer)
    tail = len(uninterrupted["train_loss"]) // 3

    fresh_model = load_checkpoint(tmp_path / "ckpt.pth", restore_rng=True)
    fresh_optimizer = torch.optim.AdamW(fresh_model.parameters(), lr=4e-3, weight_decay=0.1)
    _, _, no_optimizer_state = run(1, fresh_model, fresh_optimizer)
    assert no_optimizer_state["train_loss"] != uninterrupted["train_loss"][-tail:]

    torch.manual_seed(999)
    resumed_model = load_checkpoint(tmp_path / "ckpt.pth")
    resumed_optimizer = torch.optim.AdamW(resumed_model.parameters(), lr=4e-3, weight_decay=0.1)
    load_checkpoint(tmp_path / "ckpt.pth", resumed_model, resumed_optimizer)
    _, _, no_rng_state = run(1, resumed_model, resumed_optimizer)
    assert no_rng_state["train_loss"] != uninterrupted["train_loss"][-tail:]


def assert_optimizer_state_beside_parameters(model, optimizer, device_type):
    """Every parameter is on ``device_type``, and so are AdamW's running averages, in the parameter's dtype."""
    for name, parameter in model.named_parameters():
        assert parameter.device.type == device_type, name
        state = optimizer.state[parameter]
        for key in ("exp_avg", "exp_avg_sq"):  # ("step" is a CPU scalar by PyTorch's design)
            assert (state[key].device, state[key].dtype) == (parameter.device, parameter.dtype), f"{name} {key}"


@pytest.fixture
def swap_params_on_move():
    """Make ``model.to(device)`` keep every Parameter object, as it does for a CPU-to-GPU move, also for "meta"."""
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(False)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")
def test_optimizer_state_is_loaded_onto_the_models_device(tmp_path, swap_params_on_move):
    """Resuming on a GPU needs AdamW's state on the GPU: load_checkpoint must move the model first.

    A CPU-only machine cannot test CUDA, so PyTorch's "meta" device (tensors without data) stands in for it: an
    optimizer state loaded before the model was moved would stay on the CPU here just as it would with a GPU.
    """
    model, optimizer, _ = run(1)
    save_checkpoint(tmp_path / "ckpt.pth", model, optimizer)
    resumed_model = tiny_model(seed=5)
    resumed_optimizer = torch.optim.AdamW(resumed_model.parameters(), lr=4e-3, weight_decay=0.1)
    loaded = load_checkpoint(tmp_path / "ckpt.pth", resumed_model, resumed_optimizer, device="meta")
    assert loaded is resumed_model
    assert_optimizer_state_beside_parameters(resumed_model, resumed_optimizer, "meta")
    assert load_checkpoint(tmp_path / "ckpt.pth", device="meta").out_head.weight.device.type == "meta"


def test_checkpoint_loads_on_the_cpu_by_default(tmp_path):
    model, optimizer, _ = run(1)
    save_checkpoint(tmp_path / "ckpt.pth", model, optimizer)
    resumed_model = tiny_model(seed=5)
    resumed_optimizer = torch.optim.AdamW(resumed_model.parameters(), lr=4e-3, weight_decay=0.1)
    load_checkpoint(tmp_path / "ckpt.pth", resumed_model, resumed_optimizer)
    assert_optimizer_state_beside_parameters(resumed_model, resumed_optimizer, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_resumes_on_a_cuda_gpu(tmp_path):
    model, optimizer, _ = run(1)
    save_checkpoint(tmp_path / "ckpt.pth", model, optimizer)
    resumed_model = tiny_model(seed=5)
    resumed_optimizer = torch.optim.AdamW(resumed_model.parameters(), lr=4e-3, weight_decay=0.1)
    load_checkpoint(tmp_path / "ckpt.pth", resumed_model, resumed_optimizer, device="cuda", restore_rng=True)
    assert_optimizer_state_beside_parameters(resumed_model, resumed_optimizer, "cuda")
    _, _, resumed = run(1, resumed_model, resumed_optimizer, device="cuda")  # AdamW steps on the GPU
    assert all(math.isfinite(loss) for loss in resumed["train_loss"])


def test_checkpoint_round_trip_builds_model_from_stored_config(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "model.pth", model)
    loaded = load_checkpoint(tmp_path / "model.pth")
    assert loaded.cfg == TINY
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_of_other_shape_is_rejected_by_name(tmp_path):
    save_checkpoint(tmp_path / "model.pth", tiny_model())
    wider = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=32, n_heads=2, n_layers=2))
    with pytest.raises(ValueError, match=r"emb_dim=16 \(the model has 32\)"):
        load_checkpoint(tmp_path / "model.pth", wider)


def test_checkpoint_without_optimizer_state_cannot_resume_an_optimizer(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "model.pth", model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "model.pth", model, torch.optim.AdamW(model.parameters()))


def test_foreign_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save(tiny_model().state_dict(), tmp_path / "weights.pth")  # a bare state_dict, no config
    with pytest.raises(ValueError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(tmp_path / "weights.pth")


def test_plot_losses_writes_the_figure(tmp_path):
    history = {"epoch": [0.5, 1.0], "tokens_seen": [100, 200], "train_loss": [3.0, 2.0], "val_loss": [3.5, 3.0]}
    fig = plot_losses(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert [line.get_label() for line in fig.axes[0].lines] == ["training loss", "validation loss"]


@pytest.mark.parametrize("mps_agrees, expected", [(True, "mps"), (False, "cpu")])
def test_choose_device_uses_mps_only_if_it_computes_like_the_cpu(monkeypatch, mps_agrees, expected):
    checked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(pretraining, "computes_like_cpu", lambda device: checked.append(device) or mps_agrees)
    assert choose_device() == torch.device(expected)
    assert checked == [torch.device("mps")]  # checked once, on the device it was about to choose
