"""D-SNR, the disaggregation signal-to-noise ratio (SEER authors; seed 000, eq. 1).

For a batch of ``batch`` local examples, the per-example gradient norms ``n_i`` of each
convolution and linear weight: ``max_i n_i / (sum_i n_i - max_i n_i + 1e-6)``; the score
is the maximum over layers. Above 1, one example dominates the batch gradient, which is
what fishing arranges. Per-example gradients come from ``torch.func`` (vmap of grad), with
batch-norm layers in evaluation mode (per-example gradients are undefined when batch
statistics couple the examples).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import torch
from torch.func import functional_call, grad, vmap

from gradguard.detect.base import (
    Context,
    Finding,
    Threshold,
    Verdict,
    mismatch,
    unverifiable,
    verdict_from,
)
from gradguard.detect.layers import weight_layers
from gradguard.detect.thresholds import resolve


class DSNR:
    name = "dsnr"
    needs_data = True
    # anchor: flag above 1 (the floor); an honest Fashion-MNIST mlp under AdamW reaches 1.36
    THRESHOLDS = (Threshold("ratio", 2.73, "dsnr", floor=1.0, doc="worst layer's D-SNR"),)

    def __init__(
        self,
        thresholds: Mapping[str, float] | None = None,
        batch: int = 32,
        chunk: int = 8,
        seed: int = 0,
    ) -> None:
        self.t = resolve(self, thresholds)
        self.batch, self.chunk, self.seed = batch, chunk, seed

    def per_example_norms(
        self, received: dict[str, torch.Tensor], ctx: Context
    ) -> dict[str, torch.Tensor]:
        """Layer -> per-example gradient norms of its weight (``batch`` values)."""
        model = ctx.instantiate(received)
        model.eval()
        assert ctx.data is not None
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(ctx.data), generator=g)[: self.batch]
        x, y = ctx.data.x[idx], ctx.data.y[idx]
        keys = [f"{n}.weight" for n in weight_layers(model)]
        state = {k: v.detach() for k, v in model.state_dict().items()}
        fixed = {k: v for k, v in state.items() if k not in keys}
        wanted = {k: state[k] for k in keys}

        def loss(w, xi, yi):
            out = functional_call(model, {**fixed, **w}, (xi[None],))
            return ctx.loss_of(out, yi[None])

        def norms(w, xi, yi):
            return {k: v.norm() for k, v in grad(loss)(w, xi, yi).items()}

        with warnings.catch_warnings():  # attention has no vmap batching rule: slower, correct
            warnings.simplefilter("ignore", UserWarning)
            per = vmap(norms, in_dims=(None, 0, 0), chunk_size=self.chunk)(wanted, x, y)
        return {k.removesuffix(".weight"): v for k, v in per.items()}

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        reason = mismatch(received, ctx.template)
        if reason:
            return unverifiable(self.name, f"cannot verify: {reason}", start)
        threshold = self.t["ratio"]
        per = self.per_example_norms(received, ctx)
        scores = {}
        for layer, n in per.items():
            n = n.double()
            top = n.max()
            scores[layer] = float(top / (n.sum() - top + 1e-6))
        layer = max(scores, key=scores.get)
        value = scores[layer]
        flagged = value > threshold
        msg = (
            f"one example's gradient is {value:.3g}x all the others together: the batch "
            "gradient isolates a single example"
            if flagged
            else f"largest D-SNR {value:.3g} (no example dominates)"
        )
        return verdict_from(
            self.name,
            [Finding("dsnr", layer, value, threshold, msg, flagged)],
            start,
            {"dsnr": scores},
        )
