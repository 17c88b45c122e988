"""Dirac / identity kernels in any convolution (Boenisch et al. 2023; seed 000, A.1.2).

A filter whose largest entry outweighs all the others together passes one input pixel
through; scaled identity kernels (and the shifted Diracs of a strided space-to-depth pass)
turn a CNN into a conduit for an analytic attack on the following linear layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradguard.detect.base import Finding, Threshold
from gradguard.detect.filters import DIRAC_RATIO, transmit_ratio

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers

THRESHOLDS = (
    Threshold(
        "dirac_filters",
        1.0,
        "forensics.dirac",
        floor=1.0,
        doc="conv filters with transmit ratio >= DIRAC_RATIO",
    ),
)


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    for layer in layers.conv:
        w = received[f"{layer}.weight"]
        if w[0].numel() < 2:
            continue
        n = int((transmit_ratio(w) >= DIRAC_RATIO).sum())
        flagged = n >= t["dirac_filters"]
        findings.append(
            Finding(
                "forensics.dirac",
                layer,
                float(n),
                t["dirac_filters"],
                f"{n} of {w.shape[0]} filters are Dirac/identity kernels"
                + (
                    " (one entry outweighs the rest): the convolution passes its input through"
                    if flagged
                    else ""
                ),
                flagged,
            )
        )
    return findings
