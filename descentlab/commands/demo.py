"""``descentlab demo``: train a small MLP on scikit-learn's digits with several optimizers."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import torch

from descentlab.commands import arguments as a
from descentlab.optim.presets import resolve

__all__ = ["register", "make_demo_optimizer", "run_demo"]

#: The demo's settings per optimizer or preset name (a preset's own settings,
#: e.g. momentum's 0.9, come from :data:`descentlab.optim.presets.PRESETS`).
DEFAULT_SETTINGS = {
    "sgd": {"lr": 0.1},
    "momentum": {"lr": 0.05},
    "nesterov": {"lr": 0.05},
    "adagrad": {"lr": 0.05},
    "rmsprop": {"lr": 1e-3},
    "adadelta": {"lr": 1.0},
    "adam": {"lr": 1e-3},
}


def _digits(seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def make_demo_optimizer(label: str, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The demo's optimizer ``label`` (preset or registered name) with ``DEFAULT_SETTINGS``."""
    import descentlab

    name, hparams = resolve(label, **DEFAULT_SETTINGS[label])
    return descentlab.make_optimizer(name, params, **hparams)


def run_demo(epochs: int = 10, batch_size: int = 64, seed: int = 0) -> list[dict[str, float]]:
    """Train the same MLP (64-64-10) with each entry of ``DEFAULT_SETTINGS``; return a row each."""
    x_train, y_train, x_val, y_val = _digits(seed)
    rows = []
    for label in DEFAULT_SETTINGS:
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        opt = make_demo_optimizer(label, model.parameters())
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for _ in range(epochs):
            for idx in torch.randperm(len(y_train), generator=gen).split(batch_size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                opt.step()
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            train_loss = torch.nn.functional.cross_entropy(model(x_train), y_train).item()
            logits = model(x_val)
            val_loss = torch.nn.functional.cross_entropy(logits, y_val).item()
            accuracy = (logits.argmax(1) == y_val).float().mean().item()
        rows.append(
            {
                "optimizer": label,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": accuracy,
                "seconds": elapsed,
            }
        )
    return rows


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = run_demo(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    table = Table(title=f"MLP on digits, {args.epochs} epochs, batch {args.batch_size}")
    for col in ("optimizer", "train loss", "val loss", "val accuracy", "time (s)"):
        table.add_column(col, justify="left" if col == "optimizer" else "right")
    for r in sorted(rows, key=lambda r: r["val_loss"]):
        table.add_row(
            r["optimizer"],
            f"{r['train_loss']:.4f}",
            f"{r['val_loss']:.4f}",
            f"{r['val_accuracy']:.3f}",
            f"{r['seconds']:.2f}",
        )
    Console().print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo", help="train a small MLP on the bundled digits data with several optimizers"
    )
    p.add_argument("--epochs", type=a.positive_int, default=10, help="epochs (default 10)")
    p.add_argument(
        "--batch-size", type=a.positive_int, default=64, help="mini-batch size (default 64)"
    )
    p.add_argument("--seed", type=a.seed, default=0, help="seed (default 0)")
    p.set_defaults(func=_main, requires=a.needs("sklearn", "rich"))
