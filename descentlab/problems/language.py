"""Character-level language models on Python standard-library source: a transformer and an LSTM.

The text is the first ``chars`` characters of a fixed list of standard-library
modules (:data:`~descentlab.problems.data.STDLIB_FILES`), encoded with a fixed
97-symbol vocabulary. The first 90% of the characters train, the last 10%
validate (a contiguous split, so no validation window overlaps a training one).

Two models read the same text with the same split, so their problems
compare architectures as well as optimizers: ``stdlib_char_transformer`` is
a pre-norm causal transformer built from ``torch.nn`` layers
(``nn.Embedding``, ``nn.TransformerEncoder`` with a causal mask, no dropout)
with learned position embeddings and a linear read-out; ``stdlib_char_lstm``
is an ``nn.Embedding``, a one-layer ``nn.LSTM`` and a linear read-out of every
hidden state (Graves, 2013, "Generating Sequences With Recurrent Neural
Networks", at small scale). The loss is ``nn.CrossEntropyLoss`` over every
position (next-character prediction, in nats).
Training windows start at offsets drawn by the run's seed; evaluation uses fixed
non-overlapping windows (all of the validation text, and an evenly spaced
sample of 64 training windows).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from descentlab.problems.base import Problem, closure_step
from descentlab.problems.data import STDLIB_FILES, VOCAB, encode_text, stdlib_text
from descentlab.problems.registry import register

__all__ = ["CharLSTM", "CharTransformer", "LanguageModelTask"]

#: Training windows used by ``evaluate`` (evenly spaced; bounds evaluation cost).
_TRAIN_EVAL_WINDOWS = 64


class CharTransformer(nn.Module):
    """A causal transformer over characters.

    Args:
        vocab: vocabulary size.
        context: maximum sequence length.
        width: model width ``d_model``.
        heads: attention heads.
        layers: transformer blocks (pre-norm, GELU, feed-forward ``4·width``).
    """

    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits of shape ``(batch, length, vocab)`` for tokens ``(batch, length)``."""
        length = tokens.shape[1]
        h = self.embed(tokens) + self.pos(torch.arange(length, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h))


class CharLSTM(nn.Module):
    """Embedding, a one-layer LSTM and a linear read-out of every hidden state.

    Args:
        vocab: vocabulary size.
        embed: embedding width.
        hidden: LSTM units.
    """

    def __init__(self, vocab: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits of shape ``(batch, length, vocab)`` for tokens ``(batch, length)``;
        every window starts from a zero state."""
        states, _ = self.rnn(self.embed(tokens))
        return self.head(states)


class LanguageModelTask:
    """Next-character prediction on a token stream split into train and validation parts.

    Args:
        model: maps ``(batch, length)`` tokens to ``(batch, length, vocab)`` logits.
        tokens: the whole encoded text.
        val_fraction: share of the stream (at its end) held out.
        context: window length.
        batch_size: windows per step; ``None`` means full batch: every
            non-overlapping training window, every step (costly: about 100 times
            a 16-window step).
        seed: seed of the training window offsets.
    """

    position = None

    def __init__(
        self, model: nn.Module, tokens: Tensor, val_fraction: float, context: int,
        batch_size: int | None, seed: int,
    ) -> None:
        self.model = model
        self.loss_fn = nn.CrossEntropyLoss()
        cut = int(len(tokens) * (1.0 - val_fraction))
        self._train, self._val = tokens[:cut], tokens[cut:]
        self._context, self._batch = context, batch_size
        self._gen = torch.Generator().manual_seed(seed)
        n_val = (len(self._val) - 1) // context
        self._val_starts = torch.arange(n_val) * context
        n_train = min(n_val, _TRAIN_EVAL_WINDOWS)
        self._train_starts = torch.linspace(0, len(self._train) - context - 2, n_train).long()
        self._params = list(model.parameters())
        self._full = torch.arange((len(self._train) - 1) // context) * context

    def parameters(self) -> list[torch.nn.Parameter]:
        """The model's parameters."""
        return self._params

    def _windows(self, stream: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        idx = starts[:, None] + torch.arange(self._context + 1)
        chunk = stream[idx]
        return chunk[:, :-1], chunk[:, 1:]

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.model(x)
        return self.loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        """One ``optimizer.step(closure)`` on ``batch_size`` random training windows
        (or on all of them, for full batch)."""
        if self._batch is None:
            starts = self._full
        else:
            high = len(self._train) - self._context - 1
            starts = torch.randint(0, high, (self._batch,), generator=self._gen)
        x, y = self._windows(self._train, starts)
        return closure_step(optimizer, lambda: self._loss(x, y))

    def _metrics(self, stream: Tensor, starts: Tensor, prefix: str) -> dict[str, float]:
        x, y = self._windows(stream, starts)
        logits = self.model(x)
        loss = self.loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        accuracy = (logits.argmax(-1) == y).float().mean()
        return {f"{prefix}_loss": float(loss), f"{prefix}_accuracy": float(accuracy)}

    def evaluate(self) -> dict[str, float]:
        """Cross-entropy (nats per character) and next-character accuracy."""
        with torch.no_grad():
            return {
                **self._metrics(self._train, self._train_starts, "train"),
                **self._metrics(self._val, self._val_starts, "val"),
            }


def _language_model(
    problem: Problem, seed: int, make_model: Callable[[dict[str, Any]], nn.Module]
) -> LanguageModelTask:
    c = dict(problem.config)
    tokens = encode_text(stdlib_text(tuple(c["files"]), c["chars"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(c)
    return LanguageModelTask(
        model, tokens, problem.val_fraction, c["context"], problem.batch_size, seed
    )


def _build_char_lm(problem: Problem, seed: int) -> LanguageModelTask:
    return _language_model(problem, seed, lambda c: CharTransformer(
        len(VOCAB), c["context"], c["width"], c["heads"], c["layers"]))


def _build_char_lstm(problem: Problem, seed: int) -> LanguageModelTask:
    return _language_model(problem, seed, lambda c: CharLSTM(len(VOCAB), c["embed"], c["hidden"]))


_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

register(Problem(
    name="stdlib_char_transformer",
    version=1,
    description="character-level transformer LM on Python standard-library source",
    kind="learning",
    steps=300,
    batch_size=16,
    metric="val_loss",
    target=2.5,
    higher_is_better=False,
    eval_every=15,
    split_seed=0,
    val_fraction=0.1,
    config=(
        ("chars", 60_000), ("context", 32), ("files", STDLIB_FILES), ("heads", 2),
        ("layers", 2), ("python", _PYTHON), ("width", 32),
    ),
    builder=_build_char_lm,
))
register(Problem(
    name="stdlib_char_lstm",
    version=1,
    description="character-level LSTM LM (64 units) on Python standard-library source",
    kind="learning",
    steps=400,
    batch_size=32,
    metric="val_loss",
    target=2.25,
    higher_is_better=False,
    eval_every=20,
    split_seed=0,
    val_fraction=0.1,
    config=(
        ("chars", 60_000), ("context", 32), ("embed", 32), ("files", STDLIB_FILES),
        ("hidden", 64), ("model", "lstm"), ("python", _PYTHON),
    ),
    builder=_build_char_lstm,
))
