"""Static parameter forensics: each attack's signature in the received weights, no data.

One module per signature (seed 000, section 3.2 and appendix A.1):

- :mod:`.imprint`: many near-identical rows in a linear layer (Robbing the Fed), with
  quantile-like monotone biases.
- :mod:`.trap`: trap-weight sign structure (Curious: every row exactly half negative).
- :mod:`.dirac`: Dirac / identity convolution kernels in any convolution.
- :mod:`.fishing`: zeroed rows and extreme biases in the last layer (Fishing).
- :mod:`.attention`: zeroed queries / identity keys (Decepticons); with local data, attention
  that does not depend on the query (:func:`.attention.query_blindness`).

The checks read the received state itself (2-D ``*.weight`` entries are linear layers,
4-D ones convolutions), so an inserted layer is inspected too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from gradguard.detect.base import Context, Finding, Threshold, Verdict, verdict_from
from gradguard.detect.forensics import attention, dirac, fishing, imprint, trap
from gradguard.detect.thresholds import resolve

SIGNATURES = (imprint, trap, dirac, fishing, attention)


def weights(received: dict[str, torch.Tensor], ctx: Context, ndim: int) -> list[str]:
    """Layer names (without ``.weight``) of the received float weights of ``ndim`` dims,
    in the template's order first (input side first), then any entries it lacks."""
    order = {k: i for i, k in enumerate(ctx.expected)}
    names = [
        k
        for k, v in received.items()
        if k.endswith(".weight")
        and isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and v.ndim == ndim
    ]
    names.sort(key=lambda k: order.get(k, len(order)))
    return [k.removesuffix(".weight") for k in names]


@dataclass(frozen=True)
class Layers:
    """Received linear (2-D) and convolution (4-D) weight layers, input side first."""

    linear: list[str]
    conv: list[str]


class Forensics:
    name = "forensics"
    needs_data = False
    # each signature module declares its own threshold
    THRESHOLDS: tuple[Threshold, ...] = tuple(t for sig in SIGNATURES for t in sig.THRESHOLDS)

    def __init__(self, thresholds: Mapping[str, float] | None = None) -> None:
        self.t = resolve(self, thresholds)

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        findings: list[Finding] = []
        largest: dict[str, Finding] = {}
        layers = Layers(weights(received, ctx, 2), weights(received, ctx, 4))
        with torch.inference_mode():  # no autograd bookkeeping: cheaper small ops
            measured = [f for sig in SIGNATURES for f in sig.check(received, layers, self.t)]
            if ctx.data is not None:
                measured += attention.check_data(received, ctx, self.t)
        for f in measured:
            if f.flagged:
                findings.append(f)
            elif f.check not in largest or f.value > largest[f.check].value:
                largest[f.check] = f
        # Unflagged measurements: only the largest of each check, for scores and calibration.
        findings.extend(largest.values())
        maxima = {f.check: max(g.value for g in findings if g.check == f.check) for f in findings}
        return verdict_from(self.name, findings, start, {"max": maxima})
