"""Decepticons signatures on attention (Fowl et al. 2023; seed 000, section 3.2, A.1.4).

Attention is disabled by zero query weights (queries become a constant bias) and keys set
to the identity. Flags a layer whose query weights vanish next to its value weights, or
whose key rows are mostly one-hot (one entry outweighs the rest of the row). Separate
``q``/``k``/``v`` layers and PyTorch's ``nn.MultiheadAttention`` (packed ``in_proj_weight``,
also inside ``nn.TransformerEncoderLayer``) are inspected alike.
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


def projections(received: dict[str, torch.Tensor], layers: Layers):
    """``(attention name, W_q, W_k, W_v)`` of every attention layer in ``received``:
    separate ``q``/``k``/``v`` linear layers (``vit-tiny``), PyTorch's packed
    ``in_proj_weight`` (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``; rows
    ``[W_q; W_k; W_v]``) and its unpacked ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``.
    """
    for layer in layers.linear:
        if layer.endswith(".q") or layer == "q":
            base = layer.removesuffix("q").removesuffix(".")
            prefix = f"{base}." if base else ""
            yield base, *(received.get(f"{prefix}{p}.weight") for p in "qkv")
    for key, value in received.items():
        if key.endswith("in_proj_weight") and isinstance(value, torch.Tensor):
            base = key.removesuffix("in_proj_weight").removesuffix(".")
            if value.ndim == 2 and value.shape[0] % 3 == 0 and value.shape[0] > 0:
                yield base, *value.chunk(3, dim=0)
            else:
                yield base, value, None, None  # not the packed shape: not inspected
        elif key.endswith("q_proj_weight") and isinstance(value, torch.Tensor):
            head = key.removesuffix("q_proj_weight")
            yield (
                head.removesuffix("."),
                value,
                *(received.get(f"{head}{p}_proj_weight") for p in "kv"),
            )


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    for base, q, k, v in projections(received, layers):
        if not all(
            isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point() for x in (q, k, v)
        ):
            continue
        base = base or "(attention)"
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
