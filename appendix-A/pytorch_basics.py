"""The reusable code of Appendix A: a toy classification dataset, a small multilayer perceptron, and the
training loop that fits one to the other.

Every definition here also appears, unchanged, in ``appendix-A.ipynb`` (a test keeps the two identical).
``ddp_train.py`` and the exercises import from this file.

Run it as a script to train the toy model and print its accuracies::

    python pytorch_basics.py --epochs 10
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

NUM_FEATURES = 50
NUM_CLASSES = 3


class ToyDataset(Dataset):
    """Pairs of (feature vector, class label) held in two tensors; item ``i`` is row ``i`` of each."""

    def __init__(self, features, labels):
        if features.ndim != 2:
            raise ValueError(f"features must be a 2-D tensor (examples, features), got shape {tuple(features.shape)}")
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must be a 1-D tensor with one label per example ({features.shape[0]}), "
                             f"got shape {tuple(labels.shape)}")
        self.features = features
        self.labels = labels

    def __len__(self):
        return self.labels.shape[0]

    def __getitem__(self, index):
        return self.features[index], self.labels[index]


def make_toy_datasets(num_train=800, num_test=200, seed=123):
    """Gaussian blobs: each of NUM_CLASSES classes is a cloud of points around its own random center.

    The centers are close enough that the clouds overlap a little, so the test accuracy stays below 100%.
    Train and test examples come from the same draw, hence from the same centers.
    """
    generator = torch.Generator().manual_seed(seed)
    centers = 0.5 * torch.randn(NUM_CLASSES, NUM_FEATURES, generator=generator)  # (classes, features)
    num_examples = num_train + num_test
    labels = torch.randint(0, NUM_CLASSES, (num_examples,), generator=generator)  # (examples,)
    noise = torch.randn(num_examples, NUM_FEATURES, generator=generator)
    features = centers[labels] + noise  # (examples, features)
    train = ToyDataset(features[:num_train], labels[:num_train])
    test = ToyDataset(features[num_train:], labels[num_train:])
    return train, test


class NeuralNetwork(torch.nn.Module):
    """A multilayer perceptron with two hidden layers (30 and 20 units) and ReLU activations."""

    def __init__(self, num_inputs, num_outputs):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(num_inputs, 30),
            torch.nn.ReLU(),
            torch.nn.Linear(30, 20),
            torch.nn.ReLU(),
            torch.nn.Linear(20, num_outputs),
        )

    def forward(self, x):
        return self.layers(x)  # (batch, num_inputs) -> (batch, num_outputs) logits


def computes_like_cpu(device, tolerance=1e-3):
    """Whether ``device`` computes a tiny GPT-style forward and backward pass the way the CPU does.

    Some versions of PyTorch and macOS give silently wrong numbers on Apple's MPS backend (readers of the book
    reported chapter-5 losses stuck near 6 and chapter-7 losses of 19.9 instead of 3.8). One causal self-attention
    block with a feed-forward part and a cross-entropy loss that ignores some targets runs on both devices; the
    loss and every gradient must agree to ``tolerance`` (relative to the largest CPU value). If they do not, or
    the device fails, the reason is printed and the answer is False.
    """
    generator = torch.Generator().manual_seed(123)
    vocab, tokens, dim = 50, 8, 16
    shapes = {"embedding": (vocab, dim), "qkv": (dim, 3 * dim), "up": (dim, 4 * dim), "down": (4 * dim, dim)}
    weights = {name: 0.3 * torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    ids = torch.randint(vocab, (2, tokens), generator=generator)
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -2:] = -100  # ignored by the loss, like the padding of chapter 7
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)

    def loss_and_gradients(where):
        params = {name: w.detach().to(where).requires_grad_() for name, w in weights.items()}  # fresh leaves
        x = params["embedding"][ids.to(where)]
        queries, keys, values = (torch.layer_norm(x, (dim,)) @ params["qkv"]).chunk(3, dim=-1)
        scores = (queries @ keys.transpose(1, 2) / dim**0.5).masked_fill(future.to(where), -torch.inf)
        x = x + torch.softmax(scores, dim=-1) @ values
        hidden = torch.nn.functional.gelu(torch.layer_norm(x, (dim,)) @ params["up"], approximate="tanh")
        x = x + hidden @ params["down"]
        logits = torch.layer_norm(x, (dim,)) @ params["embedding"].T
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.to(where).flatten())
        loss.backward()
        return [loss.detach().to("cpu")] + [p.grad.to("cpu") for p in params.values()]

    try:
        expected, found = loss_and_gradients(torch.device("cpu")), loss_and_gradients(device)
    except (RuntimeError, NotImplementedError) as error:
        print(f"{device} failed a small test computation ({error}); using the CPU instead.")
        return False
    worst = max(((f - e).abs().max() / e.abs().max()).item() for e, f in zip(expected, found))
    if not worst <= tolerance:  # also catches NaN
        print(f"{device} computed a small test differently from the CPU (relative difference {worst:.2g}, allowed "
              f"{tolerance:g}): using the CPU so that losses are right. See setup/gpu-and-cloud.md.")
        return False
    return True


def get_device():
    """The fastest available device: an NVIDIA GPU, else an Apple-silicon GPU that computes like the CPU, else
    the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available() and computes_like_cpu(torch.device("mps")):
        return torch.device("mps")
    return torch.device("cpu")


def compute_accuracy(model, data_loader, device):
    """Fraction of the examples in ``data_loader`` whose highest logit is the true class."""
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for features, labels in data_loader:
            features, labels = features.to(device), labels.to(device)
            predictions = model(features).argmax(dim=-1)  # (batch,)
            correct += (predictions == labels).sum().item()
            total += labels.shape[0]
    return correct / total


def train_one_epoch(model, data_loader, optimizer, device):
    """One pass over ``data_loader`` with a gradient step per batch; returns the mean batch loss."""
    model.train()
    total_loss = 0.0
    for features, labels in data_loader:
        features, labels = features.to(device), labels.to(device)
        logits = model(features)  # (batch, classes)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    return total_loss / len(data_loader)


def train_model(model, train_loader, test_loader, optimizer, num_epochs, device):
    """Train for ``num_epochs``, printing loss and accuracies after each; returns them per epoch."""
    history = {"train_loss": [], "train_acc": [], "test_acc": []}
    start = time.perf_counter()
    for epoch in range(num_epochs):
        train_loss = train_one_epoch(model, train_loader, optimizer, device)
        train_acc = compute_accuracy(model, train_loader, device)
        test_acc = compute_accuracy(model, test_loader, device)
        for key, value in zip(history, (train_loss, train_acc, test_acc)):
            history[key].append(value)
        print(f"Epoch {epoch + 1:2d}/{num_epochs} | train loss {train_loss:.4f} | "
              f"train acc {train_acc:.2%} | test acc {test_acc:.2%} | {time.perf_counter() - start:.1f} s")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the Appendix A toy classifier and print its accuracies.")
    parser.add_argument("--epochs", type=int, default=10, help="number of passes over the training data")
    args = parser.parse_args()

    torch.manual_seed(123)
    device = get_device()
    train_dataset, test_dataset = make_toy_datasets()
    train_loader = DataLoader(train_dataset, batch_size=32, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(123))
    test_loader = DataLoader(test_dataset, batch_size=32)
    model = NeuralNetwork(NUM_FEATURES, NUM_CLASSES).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    print(f"Training on {device} for {args.epochs} epochs")
    train_model(model, train_loader, test_loader, optimizer, args.epochs, device)
