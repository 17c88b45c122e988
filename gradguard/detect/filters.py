"""Transmit-SNR of the first convolution's filters (seed 000, section 3.2; anchors).

For each filter ``w`` of the first convolution: ``max|w| / (sum|w| - max|w| + 1e-6)``.
A filter that passes its input through (a scaled Dirac / identity kernel, Boenisch et al.)
scores about 1e6; learned filters stay below 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from gradguard.detect.base import (
    Context,
    Finding,
    Threshold,
    Verdict,
    mismatch,
    unverifiable,
    verdict_from,
)
from gradguard.detect.layers import convs
from gradguard.detect.thresholds import resolve

CHUNK = 1 << 16  # values per chunk: abs, max and sum stay in cache
# a fixed parameter: a filter whose largest entry outweighs all the others together is Dirac
DIRAC_RATIO = 1.0


def transmit_ratio(weight: torch.Tensor) -> torch.Tensor:
    """Per output filter: the largest |entry| over the sum of all the other |entries|."""
    w = weight.detach().flatten(1)
    step = max(1, CHUNK // max(1, w.shape[1]))
    peaks, sums = [], []
    for i in range(0, len(w), step):
        a = w[i : i + step].abs()
        peaks.append(a.amax(dim=1))
        sums.append(a.sum(dim=1))
    peak = torch.cat(peaks).double()
    return peak / (torch.cat(sums).double() - peak + 1e-6)


class TransmitSNR:
    name = "transmit-snr"
    needs_data = False
    # anchors: benign < 1 (the floor), Dirac ~1e6; the honest corpus reaches 0.717 on a
    # Fashion-MNIST convnet, so 2x that is above the anchor
    THRESHOLDS = (
        Threshold("ratio", 1.44, "transmit-snr", floor=1.0, doc="worst first-conv filter"),
    )

    def __init__(self, thresholds: Mapping[str, float] | None = None) -> None:
        self.t = resolve(self, thresholds)

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        reason = mismatch(received, ctx.expected)
        if reason:
            return unverifiable(self.name, f"cannot verify: {reason}", start)
        layers = convs(ctx.template)
        if not layers:
            return verdict_from(
                self.name,
                [
                    Finding(
                        "transmit-snr",
                        "-",
                        0.0,
                        self.t["ratio"],
                        "the model has no convolution: nothing to check",
                        flagged=False,
                    )
                ],
                start,
            )
        layer = layers[0]
        r = transmit_ratio(received[f"{layer}.weight"])
        worst = float(r.max())
        n_bad = int((r >= self.t["ratio"]).sum())
        flagged = worst >= self.t["ratio"]
        msg = (
            f"{n_bad} of {len(r)} filters pass their input through (largest entry "
            f"{worst:.3g}x the rest: a Dirac/identity kernel)"
            if flagged
            else f"largest filter ratio {worst:.3g} (learned filters stay below 1)"
        )
        return verdict_from(
            self.name,
            [Finding("transmit-snr", layer, worst, self.t["ratio"], msg, flagged)],
            start,
            {"ratios": r.tolist()},
        )
