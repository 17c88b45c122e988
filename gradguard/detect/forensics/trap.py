"""Trap-weight sign structure (Boenisch et al. 2023, "Curious"; seed 000, A.1.1).

Trap weights give a random half of each row's inputs a negative weight and the other half
a positive one: every row has exactly ``d/2`` negative entries. In an honest layer the
count is binomial, so exact halves are rare (about ``1/sqrt(pi d / 2)`` of rows). The
score is ``-log10`` of the binomial tail probability of seeing that many exact halves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from scipy.stats import binom

from gradguard.detect.base import Finding

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers

MIN_ROWS, MIN_COLS = 32, 16


def half_sign_score(w: torch.Tensor) -> tuple[float, int]:
    """(-log10 p, number of rows with exactly half negative entries)."""
    n, d = w.shape
    neg = (w.detach() < 0).sum(dim=1)
    exact = int(((neg == d // 2) | (neg == (d + 1) // 2)).sum())
    p0 = float(binom.pmf(d // 2, d, 0.5) + (binom.pmf((d + 1) // 2, d, 0.5) if d % 2 else 0))
    tail = float(binom.sf(exact - 1, n, p0))
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
                f"{exact} of {w.shape[0]} rows have exactly half negative weights (chance "
                f"10^-{score:.1f})" + (": the sign structure of trap weights" if flagged else ""),
                flagged,
            )
        )
    return findings
