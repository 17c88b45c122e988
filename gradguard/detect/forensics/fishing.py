"""Fishing signatures (Wen et al. 2022; seed 000, A.1.3): zeroed rows, extreme biases.

Class fishing zeroes the last layer's rows of every class but the target and gives their
biases a large value; feature fishing puts a large multiplier on one feature and a bias of
``-m * threshold``. Honest training never produces an all-zero row, and an honest layer's
biases stay small next to its rows' norms. The bias score is
``max_i |b_i - median(b)| / median_i ||W_i||`` on the last linear layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradguard.detect.base import Finding

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers


def zero_rows(w: torch.Tensor) -> int:
    w = w.detach().flatten(1)
    if w.numel() and float(w.abs().amax(dim=1).min()) > 1e-12:
        return 0  # every row has an entry above 1e-12, hence a norm above it: none is zero
    norms = w.double().norm(dim=1)
    return int((norms <= 1e-12).sum()) if bool((norms > 1e-12).any()) else 0


def bias_extremity(w: torch.Tensor, b: torch.Tensor) -> float:
    norms = w.detach().double().norm(dim=1)
    live = norms[norms > 1e-12]
    scale = float(live.median()) if len(live) else 0.0
    b = b.detach().double()
    spread = float((b - b.median()).abs().max())
    return spread / max(scale, 1e-12)


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    layers = layers.linear
    for layer in layers:
        w = received[f"{layer}.weight"]
        n = zero_rows(w)
        flagged = n >= t["zero_rows"]
        findings.append(
            Finding(
                "forensics.zero-rows",
                layer,
                float(n),
                t["zero_rows"],
                f"{n} of {w.shape[0]} rows are exactly zero"
                + (": those units were switched off" if flagged else ""),
                flagged,
            )
        )
    if layers:
        last = layers[-1]
        b = received.get(f"{last}.bias")
        if (
            isinstance(b, torch.Tensor)
            and b.ndim == 1
            and len(b) == received[f"{last}.weight"].shape[0]
            and len(b) > 1
        ):
            score = bias_extremity(received[f"{last}.weight"], b)
            flagged = score >= t["bias_extremity"]
            findings.append(
                Finding(
                    "forensics.bias",
                    last,
                    score,
                    t["bias_extremity"],
                    f"a bias {score:.3g}x the typical row norm"
                    + (
                        ": the output is forced regardless of the input (fishing)"
                        if flagged
                        else ""
                    ),
                    flagged,
                )
            )
    return findings
