"""A small residual CNN with batch normalisation on scikit-learn's digits, trained with shifts.

The network follows He et al. (2016, "Deep Residual Learning for Image
Recognition") at toy scale: a 3×3 convolution stem, then one basic block per
stage, ``h = relu(BN(conv(relu(BN(conv(x))))) + shortcut(x))``, where the
first stage keeps the 8×8 resolution and every later stage halves it with
stride 2 and a 1×1 convolution + BN on the shortcut; global average pooling
and a linear read-out. Every convolution is bias-free (BN supplies the shift),
as in the paper. Layers are ``torch.nn`` (``Conv2d``, ``BatchNorm2d``,
``AdaptiveAvgPool2d``, ``Linear``) with torch's default initialisation.

Training batches are augmented by random shifts: each image is translated by
``(dy, dx) ∈ {−s, …, s}²`` pixels (zero fill), drawn per image from the run's
seed. Batch normalisation uses the batch statistics while training.
Before every evaluation the running statistics are recomputed exactly on the
whole (unshifted) training set (``torch.optim.swa_utils.update_bn``, the
"precise BN" of Wu & Johnson, 2021, "Rethinking 'Batch' in BatchNorm"), so
the evaluated network is a function of its weights only: the exponential
running averages lag behind the weights and make the validation accuracy of
a network trained at a constant learning rate jump by several points from
one evaluation to the next, which would reward a lucky evaluation step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from descentlab.problems.base import Problem
from descentlab.problems.data import Split, load_split
from descentlab.problems.learning import SupervisedTask
from descentlab.problems.registry import register

__all__ = ["AugmentedImageTask", "BasicBlock", "ResidualCNN", "random_shift"]


def random_shift(x: Tensor, side: int, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each flattened ``side × side`` image in ``x`` by a random offset.

    Row ``i`` becomes ``x'[i, r, c] = x[i, r + dy_i, c + dx_i]`` (zero outside the
    image), with ``dy_i, dx_i`` uniform on ``{−max_shift, …, max_shift}`` drawn
    from ``generator``. ``x`` has shape ``(n, side²)``; so has the result.
    """
    n = len(x)
    padded = nn.functional.pad(x.reshape(n, side, side), (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    grid = torch.arange(side)
    rows = (dy[:, None] + grid)[:, :, None]
    cols = (dx[:, None] + grid)[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(n, side * side)


class BasicBlock(nn.Module):
    """``relu(BN(conv3×3(relu(BN(conv3×3(x))))) + shortcut(x))``; the shortcut is the
    identity, or a strided 1×1 convolution + BN when the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        """The block's output."""
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResidualCNN(nn.Module):
    """Stem conv + BN + ReLU, one :class:`BasicBlock` per width in ``widths``
    (stride 1, then 2), global average pooling, linear read-out.

    Args:
        side: the images are ``side × side``, given flattened as ``(n, side²)``.
        classes: outputs of the read-out.
        widths: channels of each stage; the stem has ``widths[0]``.
    """

    def __init__(self, side: int, classes: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one stage")
        self.side = side
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, inputs = [], widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(inputs, width, 1 if i == 0 else 2))
            inputs = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(inputs, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(n, classes)`` for flattened images ``(n, side²)``."""
        h = self.stem(x.reshape(len(x), 1, self.side, self.side))
        return self.head(self.pool(self.blocks(h)).flatten(1))


class AugmentedImageTask(SupervisedTask):
    """:class:`~descentlab.problems.learning.SupervisedTask` with random shifts of the
    training batches and batch-norm statistics recomputed on the training set before
    each evaluation (see the module docstring)."""

    def __init__(
        self, model: nn.Module, split: Split, batch_size: int | None, seed: int, *,
        side: int, max_shift: int,
    ) -> None:
        super().__init__(model, "cross_entropy", split, batch_size, seed)
        self._side, self._max_shift = side, max_shift

    def _train_inputs(self, x: Tensor) -> Tensor:
        return random_shift(x, self._side, self._max_shift, self._gen)

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy on the train and validation sets, in eval mode with exact
        training-set batch-norm statistics."""
        with torch.no_grad():
            update_bn([self._x_train], self.model)
        self.model.eval()
        try:
            return super().evaluate()
        finally:
            self.model.train()


def _build_residual(problem: Problem, seed: int) -> AugmentedImageTask:
    c = dict(problem.config)
    split = load_split(c["dataset"], problem.val_fraction, problem.split_seed, c["scaling"], False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResidualCNN(c["side"], c["outputs"], tuple(c["widths"]))
    return AugmentedImageTask(
        model, split, problem.batch_size, seed, side=c["side"], max_shift=c["max_shift"]
    )


register(Problem(
    name="digits_resnet",
    version=1,
    description="residual CNN with BatchNorm (2 blocks) on digits 8×8, random ±1-pixel shifts",
    kind="learning",
    steps=300,
    batch_size=64,
    metric="val_accuracy",
    target=0.98,
    higher_is_better=True,
    eval_every=20,
    split_seed=0,
    val_fraction=0.25,
    config=(
        ("dataset", "digits"), ("max_shift", 1), ("model", "resnet"), ("outputs", 10),
        ("scaling", "unit"), ("side", 8), ("widths", (16, 32)),
    ),
    builder=_build_residual,
))
