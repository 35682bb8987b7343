"""Compress your own model with your own training loop: prunetune.run_search around plain PyTorch.

A small CNN defined here (not in prunetune's zoo), trained on scikit-learn's 8x8 digits with an
ordinary loop; prunetune searches per-layer pruning ratios, calling `finetune` and `evaluate` below
on every pruned candidate, and returns the Pareto front of accuracy vs FLOPs. Run it from any
folder (it writes mlruns/ there):

    python examples/own_training_loop.py --trials 8
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import prunetune


class DigitsNet(nn.Module):
    """Two conv layers and a classifier for 1x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(32 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def digits() -> tuple[
    tuple[torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
]:
    """(train, val, test) splits of the 1,797 digits as (images, labels), images scaled to
    [0, 1]."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1200], y[:1200]), (x[1200:1500], y[1200:1500]), (x[1500:], y[1500:])


def train(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], epochs: int, lr: float = 1e-2
) -> None:
    """A plain loop: Adam, cross-entropy, batches of 64."""
    x, y = data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(y), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    model.eval()


def accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = data
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--study", default="digitsnet-own-loop")
    p.add_argument("--backend", default="optuna", choices=["optuna", "ray"])
    p.add_argument(
        "--export", default=None, help="export the knee of the front to this folder (ONNX)"
    )
    args = p.parse_args(argv)

    torch.manual_seed(0)
    train_split, val_split, test_split = digits()
    model = DigitsNet()
    train(model, train_split, epochs=15)
    print(f"base model: validation accuracy {accuracy(model, val_split):.1%}")

    def finetune(pruned: nn.Module) -> None:  # called on every pruned candidate, in place
        train(pruned, train_split, epochs=3, lr=5e-3)

    def evaluate(pruned: nn.Module) -> dict[str, float]:  # what the search selects on
        return {"accuracy": accuracy(pruned, val_split)}

    def test(pruned: nn.Module) -> dict[str, float]:  # held out: scored for the front only
        return {"accuracy": accuracy(pruned, test_split)}

    result = prunetune.run_search(
        model,
        example_input=val_split[0][:1],
        train_fn=finetune,
        eval_fn=evaluate,
        test_fn=test,
        objectives=("accuracy", "flops"),
        trials=args.trials,
        study_name=args.study,
        backend=args.backend,
        bits=[32],
        seed=0,
        log=print,
    )
    print(
        result.trials_dataframe()[["number", "state", "accuracy", "flops", "front"]].to_string(
            index=False
        )
    )
    knee = result.knee
    print(
        f"knee: trial {knee.number}, validation accuracy {knee.metrics['accuracy']:.1%}, "
        f"{knee.metrics['flops']:,} FLOPs"
    )
    compressed = result.model(knee)  # a plain nn.Module, reloaded exactly
    print(f"reloaded knee: test accuracy {accuracy(compressed, test_split):.1%}")
    if args.export:
        print(result.export(knee, args.export).summary())


if __name__ == "__main__":
    main()
