"""Layer scale: a server that amplifies the client's gradient (issue 8, docs/secagg.md).

Under secure aggregation a guarded non-target of model inconsistency sends a cover sized to
its own honest update, so the target's update is hidden in the sum. A server beats the
cover by amplifying the target's update: scaling a layer after the one it decodes scales
that layer's gradient by the gain, which the decoder divides out (imprint bins and the
per-row decoder ``dW_i / db_i`` are ratios). At x1000 the target's update dominates the
sum (benchmarks/results/secagg_hazard.md). With ReLU networks the gradient a layer receives
is the product of the layers after it, so the gain must show in their weights; a function-
preserving rescale (the decoded layer divided by ``a``, the next multiplied by ``a``, or a
convolution before a normalisation divided by ``a``) shows as a layer shrunk by ``a``.

The reference is the client's own architecture freshly initialised
(:func:`~gradguard.detect.fresh.fresh_states`, the mean norm over ``FRESH_SEEDS`` seeds).
Checks, on every trainable floating ``*weight`` tensor (linear, convolution, normalisation
gains, attention projections):

- ``scale.grown``: the largest norm over its fresh norm. Honest training grows weights
  too: the corpus (6 rounds x 2 epochs) stays within 1.77x, but long training at a high
  learning rate reaches 12.4x (an mlp under Adam at lr 1e-2, 30 rounds x 2 epochs; a
  convnet 11.6x, a vit-tiny 11.3x), so the threshold is 25x. A leak through scale-1 covers
  needs a gain of about 100 on one layer (benchmarks/results/secagg_amplification.md);
- ``scale.shrunk``: the largest fresh norm over norm (honest: at most 1.31x, long
  training included).

Two stronger readings were measured and left out, because honest high-learning-rate
training trips them: the product of every tensor's growth (it catches a gain spread
over several layers; an honest vit-tiny reaches 1e15 over 60 epochs of Adam at lr 1e-2)
and that product over the last accepted model (an honest first round multiplies it by
7 to 34,000, later rounds still by up to 4). A gain spread evenly over two layers (x10
each: 5 of 16 images through scale-1 covers) therefore passes on a model that also
passes every other check (docs/secagg.md).

Growth is not counted for a weight whose output goes straight into a normalisation
(:func:`normalised`): it amplifies nothing. The fresh model's norms and that set are
measured once per template. No data is needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
import torch.fx
from torch import nn

from gradguard.detect.base import (
    Context,
    Finding,
    Threshold,
    Verdict,
    mismatch,
    unverifiable,
    verdict_from,
)
from gradguard.detect.fresh import fresh_states
from gradguard.detect.thresholds import resolve

FRESH_SEEDS = 2  # norms of large tensors barely vary with the seed

NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def scaled_entries(template: nn.Module) -> list[str]:
    """The entries whose scale is compared: trainable floating ``*weight`` parameters."""
    return [
        k
        for k, p in template.named_parameters()
        if k.endswith("weight") and p.is_floating_point() and p.numel() > 0
    ]


def normalised(template: nn.Module) -> set[str]:
    """Weights of convolutions and linear layers whose output goes straight, and only, into a
    normalisation (traced by ``torch.fx``; none for a model it cannot trace): scaling them
    changes nothing after the normalisation and divides their own gradient, so their growth
    amplifies nothing (honest SGD grows them: a resnet's convolutions multiply to x72 in 15
    epochs); their shrinking still counts."""
    try:
        graph = torch.fx.symbolic_trace(template).graph
    except Exception:  # noqa: BLE001 - any untraceable model: every weight's growth counts
        return set()
    modules = dict(template.named_modules())
    out = set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and len(source.users) == 1
            and isinstance(modules.get(source.target), (nn.Conv2d, nn.Linear))
        ):
            out.add(f"{source.target}.weight")
    return out


def fresh_norms(template: nn.Module, seeds: int = FRESH_SEEDS) -> dict[str, float]:
    """Per scaled entry, its mean norm over ``seeds`` fresh inits of ``template``."""
    names = scaled_entries(template)
    total = dict.fromkeys(names, 0.0)
    for fresh in fresh_states(template, range(seeds)):
        state = fresh.state_dict()
        for k in names:
            total[k] += float(state[k].detach().double().norm()) / seeds
    return total


class LayerScale:
    """Weight norms against a fresh init of the client's architecture (registry ``scale``)."""

    name = "scale"
    needs_data = False
    # grown: 2x the honest maximum of long high-learning-rate training (12.4, the module's
    # docstring; the corpus's calibration part reaches 1.771); shrunk: 2x the corpus's
    # 1.235 (a Fashion-MNIST vit-tiny, round 6). Floors: twice and half the reference
    THRESHOLDS = (
        Threshold(
            "grown",
            25.0,
            "scale.grown",
            floor=2.0,
            doc="largest weight-tensor norm over a fresh init's (honest max 12.4, long "
            "high-lr training)",
        ),
        Threshold(
            "shrunk",
            2.47,
            "scale.shrunk",
            floor=2.0,
            doc="largest fresh-init norm over a weight tensor's norm (honest max 1.24)",
        ),
    )

    def __init__(self, thresholds: Mapping[str, float] | None = None) -> None:
        self.t = resolve(self, thresholds)
        self._fresh: tuple[int, dict[str, float], set[str]] | None = None

    def fresh(self, template: nn.Module) -> tuple[dict[str, float], set[str]]:
        """:func:`fresh_norms` and :func:`normalised` of ``template``, once per template."""
        if self._fresh is None or self._fresh[0] != id(template):
            self._fresh = (id(template), fresh_norms(template), normalised(template))
        return self._fresh[1], self._fresh[2]

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        reason = mismatch(received, ctx.expected)
        if reason:
            return unverifiable(self.name, f"cannot verify: {reason}", start)
        norms, invariant = self.fresh(ctx.template)
        ratios = {
            k: float(received[k].detach().double().norm()) / ref
            for k, ref in norms.items()
            if ref > 0
        }
        if not ratios:
            return verdict_from(self.name, [], start)
        if not all(math.isfinite(r) for r in ratios.values()):
            return unverifiable(self.name, "cannot verify: a weight norm is not finite", start)
        model = type(ctx.template).__name__
        t = self.t
        growth = {k: r for k, r in ratios.items() if k not in invariant} or {"-": 1.0}
        top = max(growth, key=growth.__getitem__)
        low = min(ratios, key=ratios.__getitem__)
        shrink = 1 / ratios[low] if ratios[low] > 0 else math.inf
        amplify = (
            "a layer's gain multiplies the gradient of the layers before it, so your update "
            "would dominate a secure sum and outweigh the others' covers (amplification, "
            "or training diverged)"
        )
        findings = [
            Finding(
                "scale.grown",
                top,
                growth[top],
                t["grown"],
                f"{top} is {growth[top]:.3g}x the norm of a fresh {model}'s, where honest "
                f"training stays within {t['grown']:.3g}x: {amplify}"
                if growth[top] >= t["grown"]
                else f"{top} is {growth[top]:.3g}x the norm of a fresh {model}'s",
                growth[top] >= t["grown"],
            ),
            Finding(
                "scale.shrunk",
                low,
                shrink,
                t["shrunk"],
                f"{low} is {_fraction(shrink)} of the norm of a fresh {model}'s, where honest "
                f"training stays above 1/{t['shrunk']:.3g}: a layer scaled down with the next "
                "scaled up computes the same function and multiplies its own gradient "
                "(amplification)"
                if shrink >= t["shrunk"]
                else f"{low} is {_fraction(shrink)} of the norm of a fresh {model}'s",
                shrink >= t["shrunk"],
            ),
        ]
        meta = {"scale": {"ratios": ratios}}
        return verdict_from(self.name, findings, start, meta)


def _fraction(shrink: float) -> str:
    return "0" if math.isinf(shrink) else f"1/{shrink:.3g}"
