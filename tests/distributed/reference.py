"""Single-process references of the compression schemes, written from the papers' equations.

Each reference holds the per-rank state of ``W`` simulated ranks and turns
their local gradients (flat float64 vectors, in ``model.parameters()`` order)
into the average every rank receives. They share no code with
``descentlab.distributed``: plain whole-vector arithmetic, one rank after the
other.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rounded(values: Tensor, coding: str) -> Tensor:
    """What a value survives the wire as, in float64."""
    if coding == "fp32":
        return values.float().double()
    if coding == "fp16":
        return values.clamp(-65504.0, 65504.0).half().double()
    if coding == "fp8":  # one fp32 scale for the message: max |x| -> 448, e4m3's largest
        top = values.abs().max().float()
        scale = top / 448.0 if top > 0 else torch.ones((), dtype=torch.float32)
        codes = (values.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
        return (codes.float() * scale).double()
    raise ValueError(coding)


class Threshold:
    """Strom 2015: residual; send entries with |r| >= τ, as ±τ (sign) or their value."""

    def __init__(self, world: int, n: int, tau: float | None, density: float | None,
                 message: str, coding: str = "fp16", rate: float = 0.5) -> None:
        self.r = [torch.zeros(n, dtype=torch.float64) for _ in range(world)]
        self.tau, self.density, self.message, self.coding, self.rate = (
            tau, density, message, coding, rate)
        self.mean = None

    def __call__(self, grads: list[Tensor]) -> Tensor:
        world, n = len(grads), len(grads[0])
        for r, g in zip(self.r, grads, strict=True):
            r += g
        if self.tau is None:  # first step of density mode: mean of the ranks' k-th largest |r|
            k = min(n, max(1, math.ceil(self.density * n)))
            self.tau = sum(float(r.abs().sort(descending=True).values[k - 1]) for r in self.r)
            self.tau /= world
        out = torch.zeros(n, dtype=torch.float64)
        sent = 0
        for r in self.r:
            mask = r.abs() >= self.tau
            sent += int(mask.sum())
            if self.message == "sign":
                value = r.sign() * self.tau * mask
            else:
                value = rounded(r, self.coding) * mask
            out += value
            r -= value
        if self.density is not None:  # steer τ by the running mean of the count
            target = self.density * n * world
            self.mean = 0.9 * (target if self.mean is None else self.mean) + 0.1 * sent
            self.tau *= min(4.0, max(0.25, self.mean / target)) ** self.rate
        return out / world


class TopK:
    """Top-k of the residual, sent with its value; the rest stays in the residual."""

    def __init__(self, world: int, n: int, density: float, coding: str = "fp16") -> None:
        self.r = [torch.zeros(n, dtype=torch.float64) for _ in range(world)]
        self.k = min(n, max(1, math.ceil(density * n)))
        self.coding = coding

    def __call__(self, grads: list[Tensor]) -> Tensor:
        out = torch.zeros_like(grads[0])
        for r, g in zip(self.r, grads, strict=True):
            r += g
            top = r.abs().argsort(descending=True)[: self.k]
            value = torch.zeros_like(r)
            value[top] = rounded(r[top], self.coding)
            out += value
            r -= value
        return out / len(grads)


class DGC:
    """Lin et al. 2018: clipping, momentum correction, top-k of v, momentum masking."""

    def __init__(self, world: int, n: int, densities: list[float], momentum: float,
                 clip: float | None, masking: bool, coding: str = "fp16") -> None:
        self.u = [torch.zeros(n, dtype=torch.float64) for _ in range(world)]
        self.v = [torch.zeros(n, dtype=torch.float64) for _ in range(world)]
        self.densities, self.m, self.clip, self.masking = densities, momentum, clip, masking
        self.coding, self.t = coding, 0

    def __call__(self, grads: list[Tensor]) -> Tensor:
        world, n = len(grads), len(grads[0])
        density = self.densities[min(self.t, len(self.densities) - 1)]
        k = min(n, max(1, math.ceil(density * n)))
        out = torch.zeros(n, dtype=torch.float64)
        for u, v, g in zip(self.u, self.v, grads, strict=True):
            g = g.clone()
            if self.clip is not None and g.norm() > self.clip / math.sqrt(world):
                g *= (self.clip / math.sqrt(world)) / g.norm()
            u.mul_(self.m).add_(g)
            v += u
            top = v.abs().argsort(descending=True)[:k]
            value = torch.zeros_like(v)
            value[top] = rounded(v[top], self.coding)
            out += value
            v -= value
            if self.masking:
                u[top] = 0
        self.t += 1
        return out / world


class Sign:
    """EF-SignSGD with one scale ‖p‖₁/n per parameter tensor."""

    def __init__(self, world: int, sizes: list[int]) -> None:
        self.e = [torch.zeros(sum(sizes), dtype=torch.float64) for _ in range(world)]
        self.sizes = sizes

    def __call__(self, grads: list[Tensor]) -> Tensor:
        out = torch.zeros_like(grads[0])
        for e, g in zip(self.e, grads, strict=True):
            p = g + e
            pieces = []
            for piece in p.split(self.sizes):
                scale = float(piece.abs().sum() / len(piece))
                scale = float(torch.tensor(scale, dtype=torch.float32))  # sent as fp32
                pieces.append(torch.where(piece < 0, -1.0, 1.0).double() * scale)
            delta = torch.cat(pieces)
            e.copy_(p - delta)
            out += delta
        return out / len(grads)
