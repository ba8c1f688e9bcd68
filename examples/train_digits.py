"""Train a small CNN on scikit-learn's handwritten digits with symbackprop's generated code —
and the same training in PyTorch beside it, from the same initial weights on the same batches.

    pip install -e '.[examples]'          # scikit-learn (its digits ship inside it) and matplotlib
    python examples/train_digits.py       # 10 epochs; --epochs, --batch, --lr, --momentum, --seed

The network is 1x8x8 → conv 8@3x3 (padding 1, relu) → max pool 2 → dense 10, cross-entropy.
Its gradients come from the module ``d.export_module`` writes, through ``loss_and_grads`` alone,
and a few lines of numpy do SGD with momentum (torch's rule: v = μ v + g, w = w − η v). Each
epoch prints its progress, the train and test accuracy and the seconds it took, for both; the
loss curves go to digits_loss.png. A prediction is the class whose one-hot target gives the
smallest loss (``loss_and_grads`` with reduce=None gives each sample's): no other function of
the module is needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from tqdm import tqdm

import symbackprop as sb

CLASSES = 10


def network() -> sb.Network:
    """1x8x8 → conv 8@3x3 (padding 1, relu) → max pool 2 → dense 10, cross-entropy."""
    return sb.Network((1, 8, 8), [
        sb.Conv2D(out_channels=8, kernel_size=3, padding=1, bias=True, activation="relu"),
        sb.MaxPool2D(kernel_size=2),
        sb.Dense(units=CLASSES, bias=True),
    ], loss="cross_entropy", name="digits")


def digits(seed: int = 0, test_share: float = 0.2) -> tuple[np.ndarray, ...]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], split into train and test sets."""
    from sklearn.datasets import load_digits  # its data ships inside the package: no download

    data = load_digits()
    images = (data.images / 16.0)[:, None]  # (N, 1, 8, 8)
    labels = data.target
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - test_share))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def exported(net: sb.Network, folder: Path) -> ModuleType:
    """The module ``export_module`` writes for ``net``, imported from its file."""
    path = net.derive().export_module(folder / "digits_gradients.py")
    spec = importlib.util.spec_from_file_location("digits_gradients", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def initial_weights(net: sb.Network, seed: int) -> dict[str, np.ndarray]:
    """torch's own initialisation of the twin, as float64 arrays by name."""
    import torch

    torch.manual_seed(seed)
    model = sb.to_torch(net)
    return {name: p.detach().numpy().copy() for name, p in zip(net.parameters, model.parameters())}


def batches(count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled epoch's batches of indices."""
    order = rng.permutation(count)
    return [order[k : k + size] for k in range(0, count, size)]


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(CLASSES)[labels]


class Ours:
    """SGD with momentum on the exported module's ``loss_and_grads``."""

    def __init__(self, module: ModuleType, params: dict[str, np.ndarray], lr: float, momentum: float):
        self.module, self.lr, self.momentum = module, lr, momentum
        self.params = {name: value.copy() for name, value in params.items()}
        self.velocity = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        out = self.module.loss_and_grads(x, one_hot(labels), self.params, reduce="mean")
        for name, grad in out.grads.items():
            if name == "x":
                continue
            self.velocity[name] = self.momentum * self.velocity[name] + grad
            self.params[name] -= self.lr * self.velocity[name]
        return float(out.loss)

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        losses = [self.module.loss_and_grads(x, one_hot(np.full(len(x), k)), self.params).loss
                  for k in range(CLASSES)]
        return float((np.argmin(losses, axis=0) == labels).mean())


class Torch:
    """The same network, weights and rule in PyTorch: torch.optim.SGD on the mean loss."""

    def __init__(self, net: sb.Network, params: dict[str, np.ndarray], lr: float, momentum: float):
        import torch

        self.torch = torch
        self.net = net
        self.model = sb.to_torch(net, params)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        torch = self.torch
        self.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(torch.tensor(x)), torch.tensor(labels))
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        with self.torch.no_grad():
            return float((self.model(self.torch.tensor(x)).argmax(dim=1).numpy() == labels).mean())

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {name: p.detach().numpy() for name, p in zip(self.net.parameters, self.model.parameters())}


def train(epochs: int = 10, batch: int = 32, lr: float = 0.05, momentum: float = 0.9, seed: int = 0,
          quiet: bool = False, folder: Path | None = None) -> dict:
    """Both trainings, epoch by epoch on the same batches; their losses, accuracies and times."""
    net = network()
    x_train, y_train, x_test, y_test = digits(seed)
    params = initial_weights(net, seed)
    with tempfile.TemporaryDirectory() as scratch:
        module = exported(net, Path(folder or scratch))
    trainers = {"symbackprop": Ours(module, params, lr, momentum), "torch": Torch(net, params, lr, momentum)}
    history = {name: {"loss": [], "train": [], "test": [], "seconds": []} for name in trainers}
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        order = batches(len(y_train), batch, rng)
        for name, trainer in trainers.items():
            started = time.perf_counter()
            steps = tqdm(order, desc=f"epoch {epoch}/{epochs} {name:>11}", leave=False, disable=quiet)
            losses = [trainer.step(x_train[index], y_train[index]) for index in steps]
            seconds = time.perf_counter() - started
            record = history[name]
            record["loss"] += losses
            record["seconds"].append(seconds)
            record["train"].append(trainer.accuracy(x_train, y_train))
            record["test"].append(trainer.accuracy(x_test, y_test))
            if not quiet:
                print(f"epoch {epoch:2d} {name:>11}: loss {np.mean(losses):.4f}, train accuracy "
                      f"{record['train'][-1]:.3f}, test {record['test'][-1]:.3f}, {seconds * 1000:.0f} ms")
    history["final"] = {name: trainer.params for name, trainer in trainers.items()}
    return history


def plot(history: dict, path: Path) -> Path:
    """The two loss curves, step by step, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    for name, style in (("symbackprop", "-"), ("torch", "--")):
        axes.plot(history[name]["loss"], style, label=name, linewidth=1)
    axes.set_xlabel("step (a batch)")
    axes.set_ylabel("mean cross-entropy of the batch")
    axes.set_yscale("log")
    axes.legend()
    axes.set_title("digits: the same training, two sets of gradients")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("digits_loss.png"))
    args = parser.parse_args(argv)
    history = train(args.epochs, args.batch, args.lr, args.momentum, args.seed)
    ours, theirs = history["symbackprop"], history["torch"]
    gap = max(float(np.abs(ours_value - history["final"]["torch"][name]).max())
              for name, ours_value in history["final"]["symbackprop"].items())
    print(f"test accuracy: symbackprop {ours['test'][-1]:.3f}, torch {theirs['test'][-1]:.3f}; "
          f"largest weight difference after {args.epochs} epochs: {gap:.1e}")
    print(f"time per epoch: symbackprop {np.median(ours['seconds']) * 1000:.0f} ms, "
          f"torch {np.median(theirs['seconds']) * 1000:.0f} ms")
    print(f"loss curves: {plot(history, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
