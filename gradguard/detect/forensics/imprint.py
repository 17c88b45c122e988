"""Imprint signature (Fowl et al. 2022, "Robbing the Fed"; seed 000, A.1.1 and Fig. 2).

Every bin of an imprint layer measures the same linear function of the input, so its rows
are (nearly) identical, and its biases are minus increasing quantiles: monotone. Learned
rows of a trained or freshly initialised layer are never near-parallel.
"""

from __future__ import annotations

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
    """Per row (the first ``MAX_ROWS``): non-zero with a near-parallel twin (cosine >= 0.999)."""
    w = w.detach()[:MAX_ROWS].float()
    if len(w) < 2:
        return torch.zeros(len(w), dtype=torch.bool)
    norms = torch.linalg.vector_norm(w, dim=1)
    live = norms > 1e-6 * float(norms.max().clamp_min(1e-30))
    u = torch.where(live[:, None], w / norms.clamp_min(1e-30)[:, None], 0.0)  # dead rows: 0
    gram = u @ u.T
    gram.fill_diagonal_(-2.0)
    return gram.amax(dim=1) >= DUPLICATE_COSINE


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
