"""Disguises an adaptive server uses to hide an analytic attack from the client's checks.

The decoders of imprint and trap weights read only the gradient, so the server is free to
change everything a detector looks at as long as the firing pattern of the attacked rows
and the decoder's arithmetic survive (seed 000, section 3.2 lists the checks; the issue
"detection that holds against an attacker who has read the detectors" motivates these):

- :func:`pretrain`: start from an honestly trained global model (a later round), so the
  untouched layers and rows look trained.
- :func:`row_noise`: per-row random noise, so no two attacked rows are near-parallel.
- :func:`honest_row_norms`: rescale each attacked row (weight and bias together, which
  leaves its firing pattern unchanged) to the norm of the honest row it replaces.
- :func:`proportional_columns`: the next layer's columns for the attacked rows become
  ``c_i u`` (one random direction, honest column norms), so every attacked row gets the
  same backpropagated gradient up to a known gain ``c_i`` that the decoder divides out.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gradguard.data import Dataset


def pretrain(model: nn.Module, aux: Dataset, epochs: int, seed: int, lr: float = 0.05) -> None:
    """Train ``model`` in place on the server's auxiliary data (SGD, momentum 0.9, batch 64)."""
    if epochs <= 0:
        return
    g = torch.Generator().manual_seed(seed + 7)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(aux), generator=g)
        for start in range(0, len(aux), 64):
            idx = perm[start : start + 64]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(aux.x[idx]), aux.y[idx]).backward()
            opt.step()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """What ``layer`` receives when ``model`` runs on ``x`` (a forward hook)."""
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
    try:
        model(x)
    finally:
        hook.remove()
    return seen[0].flatten(1)


def loud_directions(inputs: torch.Tensor, energy: float = 0.9999) -> torch.Tensor:
    """Orthonormal columns spanning ``energy`` of the inputs' second moment: the
    directions a row's weights must not change if it is to fire for the same samples."""
    _, s, vh = torch.linalg.svd(inputs.double(), full_matrices=False)
    share = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
    k = int((share < energy).sum()) + 1
    return vh[:k].T


@torch.no_grad()
def row_noise(
    layer: nn.Linear,
    rows: torch.Tensor,
    level: float,
    g: torch.Generator,
    loud: torch.Tensor | None = None,
) -> None:
    """Add Gaussian noise of norm ``level x ||row||`` to each of ``rows`` (weights only).

    Two rows of relative noise ``e`` have cosine about ``1 / (1 + e^2)``: above 0.032 no
    two rows are within the twin-row check's 0.999. With ``loud`` (from
    :func:`loud_directions`) the noise is projected off the directions the data occupies,
    so it barely moves any row's pre-activation on real inputs ("quiet" noise).
    """
    if level <= 0:
        return
    w = layer.weight
    noise = torch.randn(len(rows), w.shape[1], generator=g, dtype=torch.float64)
    if loud is not None:
        noise -= (noise @ loud) @ loud.T
    noise *= (level * w[rows].double().norm(dim=1) / noise.norm(dim=1))[:, None]
    w[rows] += noise.to(w.dtype)


@torch.no_grad()
def honest_row_norms(layer: nn.Linear, rows: torch.Tensor, honest: torch.Tensor) -> None:
    """Scale each attacked row and its bias by ``||honest row|| / ||row||`` (positive, so
    the row fires for exactly the same inputs)."""
    w, b = layer.weight, layer.bias
    factor = honest[rows].double().norm(dim=1) / w[rows].double().norm(dim=1).clamp_min(1e-30)
    w[rows] *= factor[:, None].to(w.dtype)
    b[rows] *= factor.to(b.dtype)


@torch.no_grad()
def honest_activations(
    layer: nn.Linear, rows: torch.Tensor, honest_w: torch.Tensor, honest_b: torch.Tensor, x_in
) -> None:
    """Scale each attacked row and its bias so its pre-activation on the inputs ``x_in``
    has the RMS of the honest row's: the next layers then see honest-sized activations."""
    w, b = layer.weight, layer.bias
    x = x_in.double()
    mine = (x @ w[rows].double().T + b[rows].double()).pow(2).mean(0).sqrt()
    theirs = (x @ honest_w[rows].double().T + honest_b[rows].double()).pow(2).mean(0).sqrt()
    factor = theirs / mine.clamp_min(1e-30)
    w[rows] *= factor[:, None].to(w.dtype)
    b[rows] *= factor.to(b.dtype)


@torch.no_grad()
def proportional_columns(
    downstream: nn.Linear, rows: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """Set ``downstream``'s columns ``rows`` to ``c_i u`` (``u`` a random unit vector,
    ``c_i`` the column's own norm); return the gains ``c`` (one per column of the layer,
    1 where untouched)."""
    w = downstream.weight
    u = torch.randn(w.shape[0], generator=g, dtype=torch.float64)
    u /= u.norm()
    c = w[:, rows].double().norm(dim=0).clamp_min(1e-3)
    w[:, rows] = (u[:, None] * c[None, :]).to(w.dtype)
    gain = torch.ones(w.shape[1], dtype=torch.float64)
    gain[rows] = c
    return gain


__all__ = [
    "honest_activations",
    "honest_row_norms",
    "layer_inputs",
    "loud_directions",
    "pretrain",
    "proportional_columns",
    "row_noise",
]
