"""Fishing signatures (Wen et al. 2022; seed 000, A.1.3): zeroed rows, extreme biases.

Class fishing zeroes the last layer's rows of every class but the target and gives their
biases a large value; feature fishing puts a large multiplier on one feature and a bias of
``-m * threshold``. Honest training never produces an all-zero row, and an honest layer's
biases stay small next to its rows' norms.

A row ``w`` added to every row of a softmax head, and a constant added to every bias, change
neither the probabilities nor any gradient, so an attacker adds them for free
(:func:`gradguard.attacks.server.fishing.disguise`): zeroed rows become equal rows and the
median row norm grows. The head is therefore read through its invariant part, the rows
with their mean row subtracted (``C``):

- bias score ``max_i |b_i - median(b)| / median_i ||C_i||``;
- zeroed rows: rows whose nearest other row lies within ``NEAR`` x ``median_i ||C_i||``
  (zeroed rows coincide; honest 10-class heads on digits sit at >= 1.19, fresh or trained
  mlp, convnet, resnet, vit-tiny), besides rows that are exactly zero.

Hidden layers have no such freedom: there only exactly-zero rows count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradguard.detect.base import Finding, Threshold

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers


def zero_rows(w: torch.Tensor) -> int:
    w = w.detach().flatten(1)
    if w.numel() and float(w.abs().amax(dim=1).min()) > 1e-12:
        return 0  # every row has an entry above 1e-12, hence a norm above it: none is zero
    norms = w.double().norm(dim=1)
    return int((norms <= 1e-12).sum()) if bool((norms > 1e-12).any()) else 0


NEAR = 0.25  # nearest-row distance, in units of the median centred row norm, of a zeroed row
MAX_ROWS = 4096


def centred(w: torch.Tensor) -> torch.Tensor:
    """The rows of a softmax head less their mean row (what the softmax depends on)."""
    w = w.detach().double().flatten(1)
    return w - w.mean(0)


def coincident_rows(w: torch.Tensor) -> int:
    """Head rows whose nearest other row is within ``NEAR`` x the median centred row norm
    (0 when all rows are equal: a zero-initialised head)."""
    c = centred(w[:MAX_ROWS])
    if len(c) < 2:
        return 0
    scale = float(c.norm(dim=1).median())
    if scale <= 1e-12:
        return 0
    d = torch.cdist(c, c)
    d.fill_diagonal_(torch.inf)
    return int((d.amin(dim=1) <= NEAR * scale).sum())


def bias_extremity(w: torch.Tensor, b: torch.Tensor) -> float:
    """``max |b - median(b)|`` over the median norm of the head's centred rows."""
    norms = centred(w).norm(dim=1)
    live = norms[norms > 1e-12]
    scale = float(live.median()) if len(live) else 0.0
    b = b.detach().double()
    spread = float((b - b.median()).abs().max())
    return spread / max(scale, 1e-12)


THRESHOLDS = (
    Threshold(
        "zero_rows",
        1.0,
        "forensics.zero-rows",
        floor=1.0,
        doc="all-zero rows in the first or last linear layer",
    ),
    Threshold(
        "bias_extremity",
        10.0,
        "forensics.bias",
        floor=10.0,
        doc="last-layer max|b| / median row norm",
    ),
)


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    layers = layers.linear
    for i, layer in enumerate(layers):
        w = received[f"{layer}.weight"]
        n, what = zero_rows(w), "are exactly zero"
        if i == len(layers) - 1 and (m := coincident_rows(w)) > n:
            n, what = m, f"coincide up to the softmax's free common row (within {NEAR:g}x)"
        flagged = n >= t["zero_rows"]
        findings.append(
            Finding(
                "forensics.zero-rows",
                layer,
                float(n),
                t["zero_rows"],
                f"{n} of {w.shape[0]} rows {what}"
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
                    f"a bias {score:.3g}x the typical (centred) row norm"
                    + (
                        ": the output is forced regardless of the input (fishing)"
                        if flagged
                        else ""
                    ),
                    flagged,
                )
            )
    return findings
