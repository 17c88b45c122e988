"""Decepticons signatures on attention (Fowl et al. 2023; seed 000, section 3.2, A.1.4).

Attention is disabled by zero query weights (queries become a constant bias) and keys set
to the identity. Flags a layer whose query weights vanish next to its value weights, or
whose key rows are mostly one-hot (one entry outweighs the rest of the row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradguard.detect.base import Finding, Threshold
from gradguard.detect.filters import DIRAC_RATIO, transmit_ratio

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers

ZERO_QUERY = 1e-3  # ||W_q|| / ||W_v|| below this: zeroed queries
IDENTITY_KEYS = 0.5  # fraction of one-hot key rows above this: identity keys
THRESHOLDS = (
    Threshold(
        "attention",
        1.0,
        "forensics.attention",
        floor=1.0,
        doc="attention layers with zeroed queries or identity keys",
    ),
)


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    for layer in layers.linear:
        if not layer.endswith(".q"):
            continue
        base = layer.removesuffix(".q")
        q, k, v = (received.get(f"{base}.{p}.weight") for p in "qkv")
        if not all(isinstance(x, torch.Tensor) and x.ndim == 2 for x in (q, k, v)):
            continue
        reasons = []
        rel = float(q.double().norm() / v.double().norm().clamp_min(1e-300))
        if rel < ZERO_QUERY:
            reasons.append(f"query weights are zero ({rel:.2g} of the value weights' norm)")
        one_hot = float((transmit_ratio(k) >= DIRAC_RATIO).double().mean())
        if one_hot > IDENTITY_KEYS:
            reasons.append(f"{one_hot:.0%} of key rows are one-hot (identity keys)")
        flagged = len(reasons) >= t["attention"]
        findings.append(
            Finding(
                "forensics.attention",
                base,
                float(len(reasons)),
                t["attention"],
                "; ".join(reasons) + ": attention is disabled (Decepticons)"
                if flagged
                else f"query/value norm {rel:.3g}, {one_hot:.0%} one-hot key rows",
                flagged,
            )
        )
    return findings
