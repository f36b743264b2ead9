"""Small supervised learning problems on scikit-learn's bundled datasets.

Every loss named in the seed articles comes from ``torch.nn`` and is used by at
least one problem:

==========================  ==============  ==========================  ==================
problem                     data            model                       loss (torch.nn)
==========================  ==============  ==========================  ==================
breast_cancer_logreg        breast cancer   logistic regression         BCEWithLogitsLoss
breast_cancer_svm           breast cancer   linear, 2 outputs           MultiMarginLoss
digits_softmax              digits 8×8      softmax regression          CrossEntropyLoss
digits_mlp                  digits 8×8      MLP 64-64-10 (ReLU)         CrossEntropyLoss
digits_cnn                  digits 8×8      2 conv + pool, linear       CrossEntropyLoss
digits_autoencoder          digits 8×8      MLP 64-32-8-32-64           MSELoss
diabetes_linreg             diabetes        linear regression           MSELoss
diabetes_lad                diabetes        linear regression           L1Loss (MAE)
==========================  ==============  ==========================  ==================

Binary cross-entropy is ``BCEWithLogitsLoss`` (sigmoid and BCE fused, the
numerically stable form). The hinge loss is ``MultiMarginLoss`` (the
multi-class hinge of Weston and Watkins); with two classes it equals
``½·max(0, 1 − (s_y − s_other))``, the binary hinge on the score difference
(halved, as torch divides by the number of classes). ``HingeEmbeddingLoss`` is a
loss on distances, not a classifier's hinge, so it is not used.

The split (``split_seed``, ``val_fraction``) and the feature scaling are fixed
by the problem; the seed of :meth:`Problem.build` sets the initial weights
(``torch.nn`` default initialisation under that seed) and the mini-batch order
(a new permutation every epoch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from descentlab.problems.base import Problem, closure_step
from descentlab.problems.data import Split, load_split
from descentlab.problems.registry import register

__all__ = ["LOSSES", "MODELS", "SupervisedTask", "build_model"]

#: loss name -> (torch.nn loss class, how predictions are read for accuracy)
LOSSES: dict[str, tuple[type[nn.Module], str | None]] = {
    "bce": (nn.BCEWithLogitsLoss, "logit"),
    "cross_entropy": (nn.CrossEntropyLoss, "argmax"),
    "hinge": (nn.MultiMarginLoss, "argmax"),
    "mse": (nn.MSELoss, None),
    "mae": (nn.L1Loss, None),
}


def _linear(inputs: int, outputs: int) -> nn.Module:
    return nn.Linear(inputs, outputs)


def _mlp(inputs: int, outputs: int, hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


def _cnn(inputs: int, outputs: int, side: int = 8, channels: int = 8) -> nn.Module:
    if side * side != inputs:
        raise ValueError(f"cnn needs inputs == side², got inputs={inputs}, side={side}")
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * (side // 4) ** 2, outputs),
    )


def _autoencoder(inputs: int, outputs: int, hidden: int = 32, code: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(),
        nn.Linear(hidden, code),
        nn.Linear(code, hidden), nn.ReLU(),
        nn.Linear(hidden, outputs),
    )


#: model name -> factory ``(inputs, outputs, **options) -> nn.Module``
MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": _linear,
    "mlp": _mlp,
    "cnn": _cnn,
    "autoencoder": _autoencoder,
}


def build_model(name: str, inputs: int, outputs: int, seed: int, **options: int) -> nn.Module:
    """Build model ``name`` with torch's default initialisation drawn under ``seed``.

    The global RNG is forked, so building a model does not disturb the caller's
    random state.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](inputs, outputs, **options)


class SupervisedTask:
    """Train ``model`` with ``loss`` on a fixed split, by mini-batches in seeded epoch order.

    Args:
        model: the network.
        loss: a key of :data:`LOSSES`.
        split: the data; for regression and binary losses the targets are
            converted to float32 here.
        batch_size: rows per step; ``None`` for full batch.
        seed: seed of the mini-batch order.
    """

    position = None

    def __init__(
        self, model: nn.Module, loss: str, split: Split, batch_size: int | None, seed: int
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(sorted(LOSSES))}")
        loss_cls, self._readout = LOSSES[loss]
        self.model = model
        self.loss_fn = loss_cls()
        float_target = self._readout in (None, "logit")
        convert = (lambda y: y.to(torch.float32)) if float_target else (lambda y: y)
        self._x_train, self._y_train = split.x_train, convert(split.y_train)
        self._x_val, self._y_val = split.x_val, convert(split.y_val)
        n = len(self._x_train)
        self._batch = n if batch_size is None else min(batch_size, n)
        self._gen = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.int64)
        self._params = [p for p in model.parameters() if p.requires_grad]

    def parameters(self) -> list[torch.nn.Parameter]:
        """The model's trainable parameters."""
        return self._params

    def _output(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out.squeeze(-1) if out.shape[-1] == 1 and self._y_train.dim() == 1 else out

    def _next_batch(self) -> Tensor:
        if len(self._order) < self._batch:
            n = len(self._x_train)
            self._order = torch.cat([self._order, torch.randperm(n, generator=self._gen)])
        batch, self._order = self._order[: self._batch], self._order[self._batch :]
        return batch

    def _train_inputs(self, x: Tensor) -> Tensor:
        """The inputs of a training batch as the model sees them (subclasses augment here)."""
        return x

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        """One ``optimizer.step(closure)`` on the next mini-batch; returns its loss."""
        idx = self._next_batch()
        xb, yb = self._train_inputs(self._x_train[idx]), self._y_train[idx]
        return closure_step(optimizer, lambda: self.loss_fn(self._output(xb), yb))

    def _metrics(self, x: Tensor, y: Tensor, prefix: str) -> dict[str, float]:
        out = self._output(x)
        metrics = {f"{prefix}_loss": float(self.loss_fn(out, y))}
        if self._readout == "argmax":
            metrics[f"{prefix}_accuracy"] = float((out.argmax(-1) == y).float().mean())
        elif self._readout == "logit":
            metrics[f"{prefix}_accuracy"] = float(((out > 0).float() == y).float().mean())
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Loss (and accuracy for classifiers) on the whole train and validation sets."""
        with torch.no_grad():
            return {
                **self._metrics(self._x_train, self._y_train, "train"),
                **self._metrics(self._x_val, self._y_val, "val"),
            }


def _build_supervised(problem: Problem, seed: int) -> SupervisedTask:
    c = dict(problem.config)
    regression = c["loss"] in ("mse", "mae")
    split = load_split(c["dataset"], problem.val_fraction, problem.split_seed, c["scaling"],
                       regression and not c.get("reconstruct", False))
    if c.get("reconstruct", False):
        split = Split(split.x_train, split.x_train, split.x_val, split.x_val)
    inputs = split.x_train.shape[1]
    outputs = c["outputs"]
    model = build_model(c["model"], inputs, outputs, seed, **dict(c.get("options", ())))
    return SupervisedTask(model, c["loss"], split, problem.batch_size, seed)


def _supervised(
    name: str, description: str, *, dataset: str, model: str, loss: str, outputs: int,
    steps: int, batch_size: int | None, metric: str, target: float, scaling: str = "standardize",
    options: tuple[tuple[str, int], ...] = (), reconstruct: bool = False, version: int = 1,
) -> Problem:
    config = [("dataset", dataset), ("loss", loss), ("model", model), ("options", options),
              ("outputs", outputs), ("scaling", scaling)]
    if reconstruct:
        config.append(("reconstruct", True))
    return register(Problem(
        name=name, version=version, description=description, kind="learning", steps=steps,
        batch_size=batch_size, metric=metric, target=target,
        higher_is_better=metric.endswith("accuracy"), eval_every=max(1, steps // 20),
        split_seed=0, val_fraction=0.25, config=tuple(sorted(config)),
        builder=_build_supervised,
    ))


_supervised(
    "breast_cancer_logreg", "logistic regression on breast cancer (BCE)",
    dataset="breast_cancer", model="linear", loss="bce", outputs=1,
    steps=100, batch_size=32, metric="val_loss", target=0.06,
)
_supervised(
    "breast_cancer_svm", "linear SVM on breast cancer (multi-margin hinge)",
    dataset="breast_cancer", model="linear", loss="hinge", outputs=2,
    steps=100, batch_size=32, metric="val_accuracy", target=0.97,
)
_supervised(
    "digits_softmax", "softmax regression on digits 8×8 (cross-entropy)",
    dataset="digits", model="linear", loss="cross_entropy", outputs=10,
    steps=200, batch_size=64, metric="val_accuracy", target=0.95,
)
_supervised(
    "digits_mlp", "MLP 64-64-10 on digits 8×8 (cross-entropy)",
    dataset="digits", model="mlp", loss="cross_entropy", outputs=10,
    steps=200, batch_size=64, metric="val_accuracy", target=0.97, options=(("hidden", 64),),
)
_supervised(
    "digits_cnn", "small CNN (2 conv + pool) on digits 8×8 (cross-entropy)",
    dataset="digits", model="cnn", loss="cross_entropy", outputs=10,
    steps=300, batch_size=64, metric="val_accuracy", target=0.97, scaling="unit",
    options=(("channels", 8),),
)
_supervised(
    "digits_autoencoder", "autoencoder 64-32-8-32-64 (linear code) on digits (MSE)",
    dataset="digits", model="autoencoder", loss="mse", outputs=64,
    steps=400, batch_size=64, metric="val_loss", target=0.025, scaling="unit",
    options=(("code", 8), ("hidden", 32)), reconstruct=True,
)
_supervised(
    "diabetes_linreg", "linear regression on diabetes (MSE, standardised target)",
    dataset="diabetes", model="linear", loss="mse", outputs=1,
    steps=100, batch_size=32, metric="val_loss", target=0.49,
)
_supervised(
    "diabetes_lad", "least-absolute-deviation regression on diabetes (MAE)",
    dataset="diabetes", model="linear", loss="mae", outputs=1,
    steps=150, batch_size=32, metric="val_loss", target=0.57,
)
