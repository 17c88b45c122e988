"""Imprint signature (Fowl et al. 2022, "Robbing the Fed"; seed 000, A.1.1 and Fig. 2).

Every bin of an imprint layer measures the same linear function of the input, so its rows
are (nearly) identical, and its biases are minus increasing quantiles: monotone. Learned
rows of a trained or freshly initialised layer are never near-parallel.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from gradguard.detect.base import Finding, Threshold

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers

DUPLICATE_COSINE = 0.999  # a fixed parameter of the statistic, not a decision threshold
THRESHOLDS = (
    Threshold(
        "duplicate_rows",
        3.0,
        "forensics.imprint",
        floor=3.0,
        doc="rows of one linear layer with a near-identical twin",
    ),
)
MAX_ROWS = 4096


def has_twin(w: torch.Tensor) -> torch.Tensor:
    """Per row (the first ``MAX_ROWS``): non-zero with a near-parallel twin (cosine >= 0.999).

    Large, wide layers first project the unit rows on ``PROBE_DIMS`` orthonormal directions: a
    projection never lengthens a difference, so rows whose projections lie farther apart
    than a cosine of 0.999 allows (``|u_i - u_j|^2 <= 0.002``) cannot be twins, and only the
    remaining candidates are compared in full."""
    w = w.detach()[:MAX_ROWS].float()
    if len(w) < 2:
        return torch.zeros(len(w), dtype=torch.bool)
    norms = torch.linalg.vector_norm(w, dim=1)
    live = norms > 1e-6 * float(norms.max().clamp_min(1e-30))
    u = w / norms.clamp_min(1e-30)[:, None]
    if not bool(live.all()):
        u = torch.where(live[:, None], u, 0.0)  # dead rows: 0
    if u.shape[1] < 4 * PROBE_DIMS or len(u) ** 2 * u.shape[1] < 1 << 24:  # small: all pairs
        gram = u @ u.T
        gram.fill_diagonal_(-2.0)
        return gram.amax(dim=1) >= DUPLICATE_COSINE
    p = u @ _directions(u.shape[1])
    sq = (p * p).sum(1)
    near = sq[:, None] + sq[None, :] - 2 * (p @ p.T) <= 2 * (1 - DUPLICATE_COSINE) + 1e-3
    near.fill_diagonal_(False)
    rows = near.any(1).nonzero().flatten()
    twin = torch.zeros(len(u), dtype=torch.bool)
    if len(rows):
        gram = u[rows] @ u.T
        gram[torch.arange(len(rows)), rows] = -2.0
        twin[rows] = gram.amax(dim=1) >= DUPLICATE_COSINE
    return twin


PROBE_DIMS = 32


@functools.lru_cache(maxsize=8)
def _directions(d: int) -> torch.Tensor:
    """``d x PROBE_DIMS`` orthonormal columns, seeded (read-only: cached)."""
    g = torch.randn(d, PROBE_DIMS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.linalg.qr(g)[0].float()


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    threshold = t["duplicate_rows"]
    for layer in layers.linear:
        w = received[f"{layer}.weight"]
        if w.shape[0] < 2:
            continue
        twin = has_twin(w)
        n = int(twin.sum())
        if n < threshold:
            findings.append(
                Finding(
                    "forensics.imprint",
                    layer,
                    float(n),
                    threshold,
                    f"{n} near-identical rows",
                    flagged=False,
                )
            )
            continue
        twins = twin.nonzero().flatten()
        msg = f"{n} of {w.shape[0]} rows are near-identical (cosine >= {DUPLICATE_COSINE})"
        bias = received.get(f"{layer}.bias")
        if isinstance(bias, torch.Tensor) and bias.shape == (w.shape[0],):
            b = bias.detach().double()[twins]
            steps = torch.sign(b[1:] - b[:-1])
            mono = float(max((steps <= 0).double().mean(), (steps >= 0).double().mean()))
            msg += f"; their biases are {mono:.0%} monotone"
        findings.append(
            Finding(
                "forensics.imprint",
                layer,
                float(n),
                threshold,
                msg + ": the signature of an imprint layer",
            )
        )
    return findings
