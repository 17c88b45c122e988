"""Trap-weight sign structure (Boenisch et al. 2023, "Curious"; seed 000, A.1.1).

Trap weights give a random half of each row's inputs a negative weight and the other half
a positive one: every row has exactly as many negative as positive entries. Entries set to
exactly zero (the inputs a pass-through does not reach, on ``convnet``) are not counted.
In an honest layer the count of negatives is binomial, so exact halves are rare (about
``1/sqrt(pi d / 2)`` of rows). The score is ``-log10`` of the binomial tail probability of
seeing that many exact halves (rows of different live widths pooled at their mean chance).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from scipy.special import bdtrc

from gradguard.detect.base import Finding, Threshold

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers

MIN_ROWS, MIN_COLS = 32, 16
LN2 = math.log(2)

THRESHOLDS = (
    Threshold(
        "trap_signs",
        12.0,
        "forensics.trap",
        floor=12.0,
        doc="-log10 p of rows with exactly half negative weights",
    ),
)


def half_chance(d: int) -> float:
    """P(a row of ``d`` random signs has as many negatives as positives, give or take one)."""
    k = d // 2
    pmf = math.exp(math.lgamma(d + 1) - math.lgamma(k + 1) - math.lgamma(d - k + 1) - d * LN2)
    return 2 * pmf if d % 2 else pmf


def half_sign_score(w: torch.Tensor) -> tuple[float, int]:
    """(-log10 p, number of rows with exactly half negative non-zero entries)."""
    w = w.detach()
    neg = (w < 0).sum(dim=1)
    pos = (w > 0).sum(dim=1)
    live = neg + pos
    used = live >= MIN_COLS
    exact_rows = ((neg - pos).abs() <= 1) & used
    n, exact = torch.stack([used.sum(), exact_rows.sum()]).tolist()
    if n < MIN_ROWS:
        return 0.0, 0
    widths = live if n == len(live) else live[used]
    lo, hi = torch.aminmax(widths)
    if int(lo) == int(hi):
        p0 = half_chance(int(lo))
    else:
        d, counts = torch.unique(widths, return_counts=True)
        p0 = sum(half_chance(k) * c for k, c in zip(d.tolist(), counts.tolist(), strict=True)) / n
    tail = float(bdtrc(exact - 1, n, p0)) if exact else 1.0  # P(count >= exact)
    return (-math.log10(tail) if tail > 0 else 300.0), exact


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    for layer in layers.linear:
        w = received[f"{layer}.weight"]
        if w.shape[0] < MIN_ROWS or w.shape[1] < MIN_COLS:
            continue
        score, exact = half_sign_score(w)
        flagged = score >= t["trap_signs"]
        findings.append(
            Finding(
                "forensics.trap",
                layer,
                score,
                t["trap_signs"],
                f"{exact} of {w.shape[0]} rows have exactly as many negative as positive "
                f"weights (chance 10^-{score:.1f})"
                + (": the sign structure of trap weights" if flagged else ""),
                flagged,
            )
        )
    return findings
