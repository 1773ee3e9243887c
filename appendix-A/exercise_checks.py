"""Automatic feedback for the Appendix A exercises (used by exercises.ipynb and exercise-solutions.ipynb).

Each ``check_exercise_A_n`` works out the expected result on its own (without reusing the learner's code),
prints a short confirmation, and raises ``AssertionError`` with a hint, not the answer, when an answer is
wrong or still ``None``. ``exercise_A_1_network``, ``exercise_A_2_inputs`` and ``make_rings`` provide the
exercises' inputs.
"""

import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pytorch_basics import NUM_FEATURES, NeuralNetwork


def require(answer, name):
    assert answer is not None, f"`{name}` is still None: replace the None in the answer cell with your answer"


def exercise_A_1_network():
    """The network whose parameters exercise A.1 asks you to count."""
    return torch.nn.Sequential(
        torch.nn.Linear(12, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 4),
    )


def check_exercise_A_1(num_params, num_biases):
    require(num_params, "num_params")
    require(num_biases, "num_biases")
    parameters = dict(exercise_A_1_network().named_parameters())
    expected = sum(p.numel() for p in parameters.values())
    expected_biases = sum(p.numel() for name, p in parameters.items() if name.endswith("bias"))
    assert num_biases == expected_biases, ("num_biases is off: each Linear layer with a bias has one bias per "
                                           "output unit, and one layer here was built with bias=False")
    assert num_params == expected, ("num_params is off: a Linear layer from m to n units has an (n, m) weight "
                                    "matrix plus its biases; ReLU layers have no parameters")
    print(f"Correct: {num_params} parameters, {num_biases} of them biases.")


def exercise_A_2_inputs():
    """The input, target and weights of exercise A.2 (fresh tensors on every call)."""
    x = torch.tensor([1.0, -2.0, 0.5])                        # (3,)
    W1 = torch.tensor([[0.3, -0.1, 0.8], [-0.5, 0.2, 0.1]])   # (hidden=2, 3)
    w2 = torch.tensor([1.5, -0.7])                            # (hidden=2,)
    target = torch.tensor(1.0)
    return x, W1, w2, target


def check_exercise_A_2(grad_W1, grad_w2):
    require(grad_W1, "grad_W1")
    require(grad_w2, "grad_w2")
    # The chain rule written out by hand, without autograd: loss = (w2 . relu(W1 x) - target)^2.
    x, W1, w2, target = exercise_A_2_inputs()
    pre_activation = W1 @ x                                   # (2,)
    hidden = pre_activation.clamp(min=0)                      # relu
    d_out = 2 * (w2 @ hidden - target)                        # dL/d(output), a scalar
    expected_w2 = d_out * hidden                              # (2,)
    d_pre = d_out * w2 * (pre_activation > 0)                 # relu passes gradient only where its input > 0
    expected_W1 = torch.outer(d_pre, x)                       # (2, 3)
    for name, answer, expected in [("grad_W1", grad_W1, expected_W1), ("grad_w2", grad_w2, expected_w2)]:
        assert isinstance(answer, torch.Tensor), f"{name} should be a tensor, got {type(answer).__name__}"
        assert answer.shape == expected.shape, \
            (f"{name} should have the shape of the weights it belongs to, {tuple(expected.shape)}, "
             f"not {tuple(answer.shape)}")
        answer = answer.detach()
        assert not torch.allclose(answer, 2 * expected, atol=1e-6), (
            f"{name} is twice the gradient: backward() ran twice and .grad accumulated both results; "
            "run exercise_A_2_inputs() again for fresh tensors and call backward() once")
        assert torch.allclose(answer, expected, atol=1e-6), (
            f"{name} has the wrong values: build the loss exactly as in the formula (relu, then the dot product "
            "with w2, minus the target, squared) from tensors with requires_grad=True, call backward() once and "
            "read .grad")
    print("Correct: autograd agrees with the chain rule worked out by hand.")


def check_exercise_A_3(SquaresDataset, squares_loader):
    require(SquaresDataset, "SquaresDataset")
    require(squares_loader, "squares_loader")
    small = SquaresDataset(7)
    assert isinstance(small, Dataset), "SquaresDataset should subclass torch.utils.data.Dataset"
    assert len(small) == 7, f"len(SquaresDataset(7)) should be 7, got {len(small)}"
    x, y = small[3]
    assert torch.equal(x, torch.tensor([3.0])) and torch.equal(y, torch.tensor([9.0])), \
        f"SquaresDataset(7)[3] should be (tensor([3.]), tensor([9.])), got {(x, y)}"
    assert x.dtype == y.dtype == torch.float32, \
        f"SquaresDataset returns {x.dtype} tensors: build them from float(i) so that a model can take them as input"

    assert isinstance(squares_loader, DataLoader), "squares_loader should be a torch.utils.data.DataLoader"
    assert len(squares_loader.dataset) == 103, "squares_loader should load SquaresDataset(103)"
    batches = list(squares_loader)
    assert len(batches) == 10, (f"squares_loader gave {len(batches)} batches, not 10: which batch size gives "
                                "10 full batches from 103 examples, and what happens to the remainder?")
    for x, y in batches:
        assert x.shape == (10, 1) and y.shape == (10, 1), \
            f"every batch should hold 10 examples of shape (1,), got features {tuple(x.shape)}"
        assert torch.equal(y, x ** 2), "in every batch, y should be the square of x"
    seen = torch.cat([x for x, _ in batches]).flatten()
    assert not torch.equal(seen, seen.sort().values), "the batches come in order: ask the DataLoader to shuffle"
    assert squares_loader.generator is not None, \
        "pass a seeded torch.Generator to the DataLoader so that the shuffled order is the same at every run"
    print("Correct: 10 shuffled batches of 10 examples; the other 3 examples are dropped.")


def make_rings(num_examples, seed):
    """2-D points of two classes: class 0 fills a disc of radius 1, class 1 a ring from radius 1.5 to 2.5.

    No straight line separates them, so a linear model cannot classify them well.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (num_examples,), generator=generator)                      # (examples,)
    radius = labels * 1.5 + torch.rand(num_examples, generator=generator)                    # (examples,)
    angle = 2 * math.pi * torch.rand(num_examples, generator=generator)                      # (examples,)
    features = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)   # (examples, 2)
    return features, labels


def check_exercise_A_4(rings_model, target=0.95):
    require(rings_model, "rings_model")
    assert isinstance(rings_model, torch.nn.Module), "rings_model should be a torch.nn.Module"
    features, labels = make_rings(1000, seed=2024)  # fresh examples the model has never seen
    device = next(rings_model.parameters()).device
    rings_model.eval()
    with torch.no_grad():
        logits = rings_model(features.to(device))
    assert logits.shape == (1000, 2), \
        f"rings_model should map (batch, 2) inputs to (batch, 2) logits, got {tuple(logits.shape)}"
    accuracy = (logits.argmax(dim=-1).cpu() == labels).float().mean().item()
    assert accuracy >= target, (f"accuracy on fresh ring data is {accuracy:.1%}, below {target:.0%}: a model needs a "
                                "hidden layer with a non-linearity to bend its decision boundary; then train longer "
                                "or with a larger learning rate")
    print(f"Correct: {accuracy:.1%} accuracy on 1000 fresh examples.")


def check_exercise_A_5(restored_model, checkpoint_path, original_model):
    require(restored_model, "restored_model")
    require(checkpoint_path, "checkpoint_path")
    path = Path(checkpoint_path)
    assert path.is_file(), f"there is no file at {checkpoint_path!r}: save the state dict there with torch.save"
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as error:
        raise AssertionError(
            f"torch.load({checkpoint_path!r}, weights_only=True) cannot read the file ({type(error).__name__}): "
            "save original_model.state_dict(), which holds only tensors; the safe loader refuses a pickled model "
            "object") from None
    original = original_model.state_dict()
    assert isinstance(saved, dict) and saved.keys() == original.keys(), \
        "the file should hold original_model.state_dict(), not the model object or something else"
    assert all(torch.equal(saved[name], original[name]) for name in original), \
        "the saved tensors differ from original_model's: save after training, not before"
    assert restored_model is not original_model, "restored_model should be a new model, not original_model itself"
    assert isinstance(restored_model, NeuralNetwork), "restored_model should be a NeuralNetwork"
    assert not restored_model.training, "call restored_model.eval() to get it ready for inference"
    x = torch.randn(16, NUM_FEATURES, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        same = torch.equal(restored_model(x), original_model.eval()(x))
    assert same, "restored_model gives different outputs: load the saved state dict into it with load_state_dict"
    print("Correct: the restored model reproduces the original's outputs exactly.")
