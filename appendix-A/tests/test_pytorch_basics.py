"""Tests of pytorch_basics.py: the toy data, the network's size, the accuracy metric, training and saving."""

import pytest
import torch
from torch.utils.data import DataLoader

from pytorch_basics import (
    NUM_CLASSES,
    NUM_FEATURES,
    NeuralNetwork,
    ToyDataset,
    compute_accuracy,
    computes_like_cpu,
    get_device,
    make_toy_datasets,
    train_model,
    train_one_epoch,
)


def make_loaders():
    train_dataset, test_dataset = make_toy_datasets()
    train_loader = DataLoader(train_dataset, batch_size=32, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(123))
    return train_loader, DataLoader(test_dataset, batch_size=32)


@pytest.mark.parametrize("num_inputs, num_outputs", [(NUM_FEATURES, NUM_CLASSES), (7, 2)])
def test_parameter_count_matches_the_layer_arithmetic(num_inputs, num_outputs):
    # A linear layer from m to n units has an (n, m) weight matrix and n biases.
    sizes = [num_inputs, 30, 20, num_outputs]
    expected = sum(m * n + n for m, n in zip(sizes, sizes[1:]))
    model = NeuralNetwork(num_inputs, num_outputs)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert model(torch.zeros(4, num_inputs)).shape == (4, num_outputs)


def test_toy_datasets_are_reproducible_and_balanced():
    train_a, test_a = make_toy_datasets(num_train=90, num_test=30)
    train_b, _ = make_toy_datasets(num_train=90, num_test=30)
    assert (len(train_a), len(test_a)) == (90, 30)
    assert torch.equal(train_a.features, train_b.features) and torch.equal(train_a.labels, train_b.labels)
    assert train_a[5][0].shape == (NUM_FEATURES,) and train_a[5][1].dtype == torch.int64
    assert set(train_a.labels.tolist()) == set(range(NUM_CLASSES))
    assert not torch.equal(make_toy_datasets(90, 30, seed=1)[0].features, train_a.features)


def test_toy_dataset_rejects_mismatched_tensors():
    with pytest.raises(ValueError, match="one label per example"):
        ToyDataset(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="2-D"):
        ToyDataset(torch.zeros(5), torch.zeros(5, dtype=torch.long))


class FixedPredictions(torch.nn.Module):
    """Ignores its input's values and returns logits that pick the given classes, batch by batch."""

    def __init__(self, predictions):
        super().__init__()
        self.predictions = predictions
        self.position = 0

    def forward(self, x):
        chosen = self.predictions[self.position:self.position + x.shape[0]]
        self.position += x.shape[0]
        return torch.nn.functional.one_hot(chosen, NUM_CLASSES).float()


def test_compute_accuracy_counts_correct_predictions_over_all_batches():
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    predictions = torch.tensor([0, 1, 0, 2, 2, 0, 1])  # 5 of 7 right
    loader = DataLoader(ToyDataset(torch.zeros(7, 3), labels), batch_size=3)  # batches of 3, 3, 1
    assert compute_accuracy(FixedPredictions(predictions), loader, "cpu") == pytest.approx(5 / 7)


def test_training_reaches_high_accuracy_on_the_toy_data():
    torch.manual_seed(123)
    train_loader, test_loader = make_loaders()
    model = NeuralNetwork(NUM_FEATURES, NUM_CLASSES)
    before = compute_accuracy(model, test_loader, "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = train_model(model, train_loader, test_loader, optimizer, num_epochs=5, device="cpu")
    assert before < 0.6
    assert history["train_loss"][-1] < 0.2 * history["train_loss"][0]
    assert history["train_acc"][-1] >= 0.98
    assert history["test_acc"][-1] >= 0.95


def test_train_one_epoch_updates_every_parameter_and_leaves_train_mode():
    torch.manual_seed(123)
    train_loader, _ = make_loaders()
    model = NeuralNetwork(NUM_FEATURES, NUM_CLASSES).eval()
    before = [p.detach().clone() for p in model.parameters()]
    train_one_epoch(model, train_loader, torch.optim.SGD(model.parameters(), lr=0.1), "cpu")
    assert model.training
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(123)
    model = NeuralNetwork(NUM_FEATURES, NUM_CLASSES)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    torch.manual_seed(456)
    restored = NeuralNetwork(NUM_FEATURES, NUM_CLASSES)
    x = torch.randn(8, NUM_FEATURES)
    assert not torch.equal(model(x), restored(x))  # different seeds, different weights: the test can tell
    restored.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True))
    assert torch.equal(model(x), restored(x))


class FakeMPS(torch.Tensor):
    """A tensor "on the MPS GPU" for machines without one: it computes on the CPU, and ``broken`` names an
    operation whose result it spoils (a plausible bug: attention weights off by a little) or that it lacks."""

    broken = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if cls.broken == "missing" and func is torch.nn.functional.gelu:
            raise NotImplementedError("The operator 'aten::gelu' is not currently implemented for the MPS device")
        result = super().__torch_function__(func, types, args, kwargs or {})
        if cls.broken == "softmax" and func is torch.softmax:
            result = result * 1.05
        if cls.broken == "tiny" and func is torch.softmax:
            result = result * (1 + 1e-6)  # rounding-sized differences, as any GPU has
        return result


@pytest.fixture
def fake_mps(monkeypatch):
    """Make this machine look like an Apple-silicon Mac whose MPS tensors are FakeMPS tensors."""
    real_to = torch.Tensor.to

    def to(tensor, *args, **kwargs):
        if args and isinstance(args[0], torch.device) and args[0].type == "mps":
            return real_to(tensor, "cpu").as_subclass(FakeMPS)
        return real_to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(FakeMPS, "broken", None)
    return FakeMPS


def test_an_mps_that_computes_like_the_cpu_is_used(fake_mps, capsys):
    assert computes_like_cpu(torch.device("mps"))
    fake_mps.broken = "tiny"
    assert get_device() == torch.device("mps")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("broken, message", [("softmax", "computed a small test differently from the CPU"),
                                             ("missing", "failed a small test computation")])
def test_an_mps_with_wrong_numbers_or_missing_operators_falls_back_to_the_cpu(fake_mps, capsys, broken, message):
    fake_mps.broken = broken
    assert not computes_like_cpu(torch.device("mps"))
    assert get_device() == torch.device("cpu")
    output = capsys.readouterr().out
    assert message in output and "using the CPU" in output


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setitem(get_device.__globals__, "computes_like_cpu", lambda device: True)
    assert get_device() == torch.device(expected)
