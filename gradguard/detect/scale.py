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
(:func:`~gradguard.detect.fresh.fresh_states`, the mean norm over ``FRESH_SEEDS`` seeds):
honest FedAvg training moves every weight tensor's norm little from its init (the honest
corpus: 0.81x to 1.9x), whatever the optimiser. Checks, on every trainable floating
``*weight`` tensor (linear, convolution, normalisation gains, attention projections):

- ``scale.grown``: the largest norm over its fresh norm;
- ``scale.gain``: the product over tensors of ``max(1, norm / fresh norm)`` (a gain spread
  over several layers, ``a^(1/k)`` each, multiplies back to ``a``);
- ``scale.shrunk``: the largest fresh norm over norm;
- ``scale.jump`` (with a last accepted model, ``ctx.previous``): the product over tensors of
  ``max(1, norm / its norm there)``: honest rounds move it little (corpus: at most 1.64),
  however long the training before, where the fresh init's reference is left behind by
  long honest training (benchmarks/results/secagg_amplification.md).

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
    # calibrated on the honest corpus's calibration part (benchmarks/calibrate.py, 120
    # models): maxima 1.771 and 2.289 (a photos convnet under AdamW, round 6), 1.216 (a
    # digits convnet at lr 0.05, round 6 over round 5), 1.235 (a Fashion-MNIST vit-tiny,
    # round 6); 2x each, rounded up. Floors: twice and half the scale of the reference
    THRESHOLDS = (
        Threshold(
            "grown",
            3.55,
            "scale.grown",
            floor=2.0,
            doc="largest weight-tensor norm over a fresh init's (honest max 1.77)",
        ),
        Threshold(
            "gain",
            4.58,
            "scale.gain",
            floor=2.0,
            doc="product over weight tensors of max(1, norm / fresh norm) (honest max 2.29)",
        ),
        Threshold(
            "jump",
            2.44,
            "scale.jump",
            floor=2.0,
            doc="product over weight tensors of max(1, norm / norm in the last accepted model) "
            "(honest max 1.216)",
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

    def _jump(
        self, received: dict[str, torch.Tensor], ctx: Context, invariant: set[str]
    ) -> float | None:
        """Growth since the last accepted model (None without a valid one)."""
        if ctx.previous is None or mismatch(ctx.previous, ctx.expected):
            return None
        names = [k for k in self.fresh(ctx.template)[0] if k not in invariant]
        jump = _growth_since(received, ctx.previous, names)
        return jump if math.isfinite(jump) else None

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
        gain = math.prod(max(1.0, r) for r in growth.values())
        grown = [k for k, r in growth.items() if r > 1.05]
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
                "scale.gain",
                ", ".join(grown[:4]) + (" ..." if len(grown) > 4 else "") or "-",
                gain,
                t["gain"],
                f"the weight tensors that grew ({len(grown)}) multiply to {gain:.3g}x a fresh "
                f"{model}'s norms, where honest training stays within {t['gain']:.3g}x: {amplify}"
                if gain >= t["gain"]
                else f"the weight tensors that grew multiply to {gain:.3g}x a fresh {model}'s",
                gain >= t["gain"],
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
        jump = self._jump(received, ctx, invariant)
        if jump is not None:
            findings.append(
                Finding(
                    "scale.jump",
                    "-",
                    jump,
                    t["jump"],
                    f"the weight tensors multiply to {jump:.3g}x their norms in the last model "
                    f"you accepted, where an honest round stays within {t['jump']:.3g}x: "
                    f"{amplify}"
                    if jump >= t["jump"]
                    else f"the weight tensors multiply to {jump:.3g}x the last accepted model's",
                    jump >= t["jump"],
                )
            )
        meta = {"scale": {"ratios": ratios, "gain": gain, "jump": jump}}
        return verdict_from(self.name, findings, start, meta)


def _growth_since(
    received: dict[str, torch.Tensor], previous: dict[str, torch.Tensor], names: list[str]
) -> float:
    """The product over ``names`` of ``max(1, norm / norm in previous)``."""
    gain = 1.0
    for k in names:
        before = float(previous[k].detach().double().norm())
        if before > 0:
            gain *= max(1.0, float(received[k].detach().double().norm()) / before)
    return gain


def _fraction(shrink: float) -> str:
    return "0" if math.isinf(shrink) else f"1/{shrink:.3g}"
