"""A detector written the way a new one is: this file plus one registry line (the tests
register it with ``monkeypatch.setitem(DETECTORS, "toy-norm", "toy_detector:NormRatio")``)."""

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
from gradguard.detect.thresholds import resolve


class NormRatio:
    """Flags a received state whose L2 norm exceeds ``ratio`` x the client's own model's."""

    name = "toy-norm"
    needs_data = False
    THRESHOLDS = (Threshold("ratio", 50.0, "toy-norm.ratio", floor=1.5, doc="norm / own norm"),)

    def __init__(self, thresholds: Mapping[str, float] | None = None) -> None:
        self.t = resolve(self, thresholds)

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        reason = mismatch(received, ctx.expected)
        if reason:
            return unverifiable(self.name, f"cannot verify: {reason}", start)
        own = torch.cat([v.flatten().double() for v in ctx.expected.values()]).norm()
        got = torch.cat([received[k].flatten().double() for k in ctx.expected]).norm()
        value = float(got / own)
        bar = self.t["ratio"]
        finding = Finding(
            "toy-norm.ratio", "-", value, bar, f"norm {value:.3g} x the client's", value >= bar
        )
        return verdict_from(self.name, [finding], start)
