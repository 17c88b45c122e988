"""Leakage audit: what the update this client would send reveals of its own batch.

Before training, on a probe batch of the client's own data at its real batch size, one
forward and one backward pass (batch norm in evaluation mode, so samples do not interact)
give, for every layer, the per-sample gradient at its output ``G`` (N x K) and its input
``X``. For a linear layer the update holds ``dW = G^T X`` and ``db = G^T 1``, so any
combination ``a`` of units decodes ``(G a)^T X / (G a)^T 1``: the input of sample ``n``
comes back exactly when ``G a`` is concentrated on ``n`` (seed 000, appendix A.1.1).

- **Analytic exposure.** The known decoders are run on the client's own update: single
  rows ``dW_i / db_i`` (trap weights, Boenisch et al.) and pairs
  ``(dW_i - l dW_j) / (db_i - l db_j)`` with the least-squares ``l`` (imprint's adjacent
  bins, Fowl et al., in any order and at any scale), pairs drawn from activation-pattern
  neighbours (gradient-direction neighbours where the layer's units are dense). A sample
  is exposed when one decoder returns its layer input at >= ``psnr_db`` dB (PSNR in the
  input's own value range).
- **Dominance** (fishing, Wen et al.; then inversion, seed 000 section 4.1). Per-sample
  gradient norms ``|G_n| |X_n|`` of every layer below the head give the effective number
  of samples that speak (participation ratio); the head's own error ``|p_n - y_n|`` says
  how many should. A head that silences samples whose prediction is wrong is fishing.

- **Head collapse** (fishing). The gradient below a softmax head is ``W^T (p - y)``; only the
  centred rows matter, and silencing samples that are wrong needs them collapsed onto few
  directions (:func:`head_collapse`).

Honest layers expose samples too: sparse honest ReLU layers give every sample back to
``dW_i / db_i`` (the calibration corpus: 64 of 64, an AdamW-trained mlp). Single-row
exposure is therefore reported as the client's own, never as tampering; the detector flags
what honest models do not do (pairs that cancel many samples of many classes, a collapsed
head, a handful of samples speaking where many should) and a rise over the last accepted
model's exposure on the same probe. ``strict`` also flags the client's own exposure above
``exposure.strict_fraction``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from gradguard.detect.base import (
    Context,
    Finding,
    LossFn,
    Threshold,
    Verdict,
    mismatch,
    unverifiable,
    verdict_from,
)
from gradguard.detect.fresh import fresh_states
from gradguard.detect.readout import Readout, image_readout
from gradguard.detect.thresholds import resolve

#: Units whose output gradient is below this fraction of the layer's largest are silent.
SILENT = 1e-7
#: A sample counts at most this many times in the lone-unit rate: once it is isolated, more
#: units isolating it expose nothing new (and a few outlier samples cannot inflate the rate).
LONE_CAP = 4
#: Batch sizes at which the lone-unit rate is read (those the probe holds); none below 16:
#: in smaller batches an honest unit firing for half the samples is alone often, by chance.
LONE_BATCHES = (16, 32, 64)
#: Probe samples the lone-unit rate is read on (the probe batch and more of the client's data;
#: only models with a dense layer below the head need the extra samples): the rate is the
#: mean over every batch of each size these samples hold, so a handful of units near their
#: firing threshold moves it little.
LONE_SAMPLES = 256
#: The reference of the lone-unit rate: its mean, layer by layer, over ``FRESH_SEEDS`` fresh
#: initialisations of the client's own architecture on the same samples (wide honest layers
#: isolate many samples by chance; trained ones stay close to their init). A layer is
#: flagged when its rate exceeds the reference by the calibrated ``lone{b}`` and by
#: ``FRESH_MARGIN - 1`` times the reference (a safeguard for wide layers, where the
#: reference is large). Measured with 256 probe samples: 12 other fresh inits of mlp and
#: convnet (digits, width 256 and 1000) reach 1.36x the mean at most, with an excess under
#: the calibrated one; 128 trap rows among 1000 (batch 64) or 256 (batch 16) reach 1.5x
#: (convnet, Fashion-MNIST) to 3x at the batch they are tuned to.
FRESH_MARGIN = 1.3
FRESH_SEEDS = 4
#: The image readout through convolutions (``exposure.readout``) runs only when some layer's
#: lone-unit excess reaches this share of its bar (honest corpus: at most 0.51; 32 trap rows
#: at batch 64: 0.9).
READOUT_GATE = 0.5


@dataclass
class LayerExposure:
    """The samples one linear layer's update gives back, and by which decoder."""

    layer: str
    by_rows: set[int] = field(default_factory=set)
    by_pairs: set[int] = field(default_factory=set)  # exposed by a pair, not by any row
    structured: set[int] = field(default_factory=set)  # by a pair cancelling many samples
    best_db: list[float] = field(default_factory=list)  # per sample, best PSNR
    lone: dict[int, float] = field(default_factory=dict)  # lone units per sample, by batch

    @property
    def exposed(self) -> set[int]:
        return self.by_rows | self.by_pairs


@dataclass
class Probe:
    """Everything one forward/backward pass on the probe batch tells."""

    batch: int
    layers: list[LayerExposure]
    speakers: float  # effective number of samples speaking below the head (min over layers)
    speakers_layer: str
    should_speak: float  # effective number by the head's own error
    top_share: float  # share of the update carried by the loudest sample
    head: str | None = None  # the last linear layer (the classifier head)

    @property
    def worst(self) -> LayerExposure | None:
        return max(self.layers, key=lambda e: (len(e.exposed), len(e.structured)), default=None)

    @property
    def most_structured(self) -> LayerExposure | None:
        return max(self.layers, key=lambda e: len(e.structured), default=None)

    def most_lone(self) -> dict[int, tuple[float, str]]:
        """Per batch size, the largest lone-unit rate of any layer and that layer."""
        out: dict[int, tuple[float, str]] = {}
        for e in self.layers:
            for size, rate in e.lone.items():
                if rate > out.get(size, (-1.0, ""))[0]:
                    out[size] = (rate, e.layer)
        return out

    def lone(self) -> dict[str, dict[int, float]]:
        """Per layer, the lone-unit rate at each batch size."""
        return {e.layer: e.lone for e in self.layers}


def participation(s: torch.Tensor) -> float:
    """``(sum s)^2 / sum s^2``: how many samples of strength ``s`` effectively speak."""
    s = s.double()
    den = float((s * s).sum())
    return float(s.sum() ** 2 / den) if den > 0 else 0.0


def head_collapse(weight: torch.Tensor) -> float:
    """``1 - PR(s) / (C - 1)`` for the singular values ``s`` of the head's centred rows.

    The gradient a sample sends below a softmax head is ``W^T (p - y)``; adding one row to
    every row changes nothing (``sum(p - y) = 0``), so only the centred rows ``W - mean``
    matter. If they span all ``C - 1`` directions, a sample is silent only when ``p = y``
    (it is confidently right). Fishing silences wrong samples, so it must collapse the
    centred head onto few directions (Wen et al. 2022: one row kept). 0 for an evenly
    spread head, close to 1 when one direction is left.
    """
    w = weight.detach().double()
    c = w.shape[0]
    if c < 3 or w.ndim != 2:
        return 0.0
    s = torch.linalg.svdvals(w - w.mean(0, keepdim=True))[: c - 1]
    den = float((s * s).sum())
    return 1.0 - (float(s.sum() ** 2) / den) / (c - 1) if den > 0 else 1.0


def _capture(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
):
    """Inputs and output gradients of the linear/conv layers called once that the audit
    reads, and the logits, for ``model`` holding ``state`` in evaluation mode (the template
    itself is not copied)."""
    seen: dict[str, list] = {}
    hooks = []

    def hook(name):
        def fn(_m, inp, out):
            seen.setdefault(name, []).append((inp[0].detach(), out))

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    trainable = {k for k, _ in model.named_parameters()}
    params = {k: v.detach().requires_grad_(k in trainable) for k, v in state.items()}
    try:
        logits = functional_call(model, params, (x,))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    once = {n: v[0] for n, v in seen.items() if len(v) == 1 and v[0][1].requires_grad}
    # gradients only where they are read: linear layers on per-sample vectors (decoders)
    # and the last weight layer below the head (dominance); the backward stops there
    below_head = list(seen)[-2:-1]
    once = {n: v for n, v in once.items() if v[0].dim() == 2 or n in below_head}
    # the summed loss: each sample's gradient at its own scale (the batch mean x N)
    loss = (loss_fn or F.cross_entropy)(logits, y) * len(y)
    grads = torch.autograd.grad(loss, [o for _, o in once.values()], allow_unused=True)
    out = {}
    for (name, (inp, _o)), g in zip(once.items(), grads, strict=True):
        if g is not None:
            out[name] = (inp, g.detach())
    return out, logits.detach()


def _log_choose(n: torch.Tensor, k: int) -> torch.Tensor:
    n = n.double()
    return torch.lgamma(n + 1) - math.lgamma(k + 1) - torch.lgamma(n - k + 1)


@torch.inference_mode()  # plain tensor arithmetic: no autograd bookkeeping per small op
def lone_rates(g: torch.Tensor, sizes: tuple[int, ...] = LONE_BATCHES) -> dict[int, float]:
    """Units live for exactly one sample of a batch, per sample, each sample counted at most
    ``LONE_CAP`` times, at each batch size of ``sizes`` the probe holds: the mean over every
    batch of that size drawn from the probe's samples (``g``: N x K output gradients).

    A unit is live for a sample when its output gradient there is nonzero, relative to the
    unit's own largest on the probe (so rescaling a unit's downstream weights cannot hide
    it). A unit live for one sample alone returns that sample exactly (``dW_i / db_i``, seed
    000 A.1.1): trap weights (Boenisch et al.) tune every row to fire for about one sample
    of a batch of the size they expect, so each sample is isolated by several rows; honest
    layers isolate a sample now and then, by chance. The per-sample gradients of a probe in
    evaluation mode do not depend on which samples share its batch, so one pass gives every
    smaller batch: an attacker tunes its rows to the client's real batch size, which the
    audit need not know. A unit live for ``c`` of the ``N`` samples is alone with sample
    ``n`` (one of its ``c``) in a batch holding ``n`` with probability
    ``C(N - c, b - 1) / C(N - 1, b - 1)``; each sample's expected count is capped.
    """
    n, k = g.shape
    sizes = tuple(size for size in sizes if size <= n)
    if k == 0 or not sizes:
        return {}
    a = g.abs()
    live = (a > SILENT * a.amax(0)).double()
    silent = n - live.sum(0)  # per unit, the samples it is silent for
    alone = _alone(n, sizes).index_select(0, silent.long())  # units x sizes
    rates = (live @ alone).clamp_(max=LONE_CAP).mean(0)
    return dict(zip(sizes, rates.tolist(), strict=True))


@functools.lru_cache(maxsize=32)
def _alone(n: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """``(n + 1) x len(sizes)``, read-only: for a unit silent for ``s`` of ``n`` samples,
    the chance ``C(s, b - 1) / C(n - 1, b - 1)`` that it is alone with one given sample it
    fires for in a batch of ``b`` holding that sample (0 where ``s < b - 1``)."""
    silent = torch.arange(n + 1, dtype=torch.float64)
    columns = []
    for size in sizes:
        alone = torch.exp(
            _log_choose(silent.clamp_min(size - 1), size - 1)
            - _log_choose(torch.tensor(n - 1), size - 1)
        )
        columns.append(torch.where(silent >= size - 1, alone, torch.zeros_like(alone)))
    return torch.stack(columns, 1)


def _neighbours(active: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
    """Candidate pairs (i, j), both orders. Units with the same firing set stand for one
    another (one representative each); for each, the ``k`` representatives whose firing
    set differs from its own by the fewest samples. Where most units fire for most samples
    (no ReLU after the layer), the ``k`` closest non-parallel gradient directions."""
    kk = g.shape[1]
    a = active.float()
    if float(a.mean()) < 0.5:
        key = a.double().T @ _hash_weights(len(a))
        _, group = torch.unique(key, return_inverse=True)
        rep = torch.full((int(group.max()) + 1,), kk).scatter_reduce(
            0, group, torch.arange(kk), "amin"
        )
        a = a.index_select(1, rep)
        size = a.sum(0)
        score = 2 * (a.T @ a) - size[:, None] - size[None, :]  # minus the Hamming distance
    else:
        rep = torch.arange(kk)
        gn = g / g.norm(dim=0).clamp_min(1e-30)
        score = (gn.T @ gn).abs()
        score.masked_fill_(score > 1 - 1e-6, 0.0)
    k = min(k, len(rep) - 1)
    if k < 1:
        return torch.zeros(0, 2, dtype=torch.long)
    score.fill_diagonal_(-math.inf)
    near = rep[torch.topk(score, k, dim=1).indices]
    rows = rep[:, None].expand(-1, k)
    pairs = torch.stack([rows, near], -1).reshape(-1, 2)
    code = torch.unique(torch.cat([pairs[:, 0] * kk + pairs[:, 1], pairs[:, 1] * kk + pairs[:, 0]]))
    return torch.stack([code // kk, code % kk], 1)


@functools.lru_cache(maxsize=16)
def _hash_weights(n: int) -> torch.Tensor:
    """Seeded random weights of ``n`` samples that tell firing sets apart (read-only)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _first_argmax(m: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """Per column of ``m`` (N x D), the first row holding its maximum ``peak`` (D), as
    ``m.max(0).indices`` gives it, without that slow reduction."""
    n = m.shape[0]
    rank = torch.arange(n, 0, -1, dtype=m.dtype)[:, None]  # n for row 0, 1 for the last
    return (n - ((m == peak) * rank).amax(0)).long().clamp_(0, max(n - 1, 0))


@torch.inference_mode()  # plain tensor arithmetic: no autograd bookkeeping per small op
def layer_exposure(
    name: str,
    x: torch.Tensor,
    g: torch.Tensor,
    psnr_db: float,
    k: int = 2,
    min_share: float = 0.3,
    min_cancelled: float = 8.0,
    onehot: torch.Tensor | None = None,
    min_classes: int = 4,
    lone: dict[int, float] | None = None,
) -> LayerExposure:
    """Run the row and pair decoders on ``dW = G^T X``, ``db = G^T 1`` (N samples).

    A decoder ``c`` (a combination of units, per-sample weights ``G c``) returns
    ``sum_m w_m x_m`` with ``w = G c / sum(G c)``; its squared error against the sample it
    weighs most comes from the Gram matrix of the inputs, without forming any image. A
    pair counts as structured when the signal it cancels on the other samples is
    ``min_cancelled`` times or more what it leaves on the isolated one, and the cancelled
    samples with real signal come from ``min_classes`` or more classes: imprint bins cancel
    every sample above the bin exactly, whatever its class; honest pairs before a narrow
    head cancel samples whose head errors point the same way (mostly one class).
    ``lone``: the layer's lone-unit rates if read on more samples (default: on these).
    """
    x, g = x.flatten(1).float(), g.float()
    n, d = x.shape
    result = LayerExposure(name, best_db=[-math.inf] * n, lone=lone or lone_rates(g))
    lo, hi = (float(v) for v in torch.aminmax(x))
    magnitude = g.abs()
    unit_peak = magnitude.amax(0) if g.numel() else torch.zeros(0)
    peak = float(unit_peak.max()) if g.numel() else 0.0
    if hi - lo <= 0 or peak == 0:
        return result
    loud = torch.nonzero(unit_peak > SILENT * peak).flatten()
    if len(loud) < g.shape[1]:
        g, magnitude = g.index_select(1, loud), magnitude.index_select(1, loud)
    units = g.shape[1]
    active = magnitude > SILENT * peak
    pairs = _neighbours(active, g, k)
    gi, gj = g.index_select(1, pairs[:, 0]), g.index_select(1, pairs[:, 1])
    lam = (gi * gj).sum(0) / (gj * gj).sum(0).clamp_min(1e-30)
    combos = torch.cat([g, gi - lam * gj], dim=1)  # samples x decoders
    magnitude = combos.abs()
    share = magnitude.amax(0)
    mass = magnitude.sum(0).clamp_min(1e-30)
    total = combos.sum(0)
    keep = torch.nonzero((share / mass >= min_share) & (total.abs() > 1e-6 * mass)).flatten()
    if len(keep) == 0:
        return result
    w = combos.index_select(1, keep) / total[keep]
    share, is_pair = share[keep], keep >= units
    top = _first_argmax(magnitude.index_select(1, keep), share)
    gram = x @ x.T
    wg = gram @ w  # samples x kept decoders
    err = (wg * w).sum(0) - 2 * wg.gather(0, top[None, :]).squeeze(0) + gram.diagonal()[top]
    db = 10 * torch.log10((hi - lo) ** 2 * d / err.clamp_min(1e-20 * d))
    best = torch.full((n,), -math.inf)
    best.scatter_reduce_(0, top, db, "amax")
    hit = db >= psnr_db
    result.best_db = best.tolist()
    result.by_rows = set(top[hit & ~is_pair].tolist())
    result.by_pairs = set(top[hit].tolist()) - result.by_rows
    # of the pairs that return a sample: the signal each cancels (its first unit's gradient
    # on every other sample, against what is left on the isolated one) and how many classes
    # the cancelled samples with real signal come from
    decoding = torch.nonzero(hit & is_pair).flatten()
    if len(decoding):
        first = gi.index_select(1, keep[decoding] - units).abs()
        first.scatter_(0, top[None, decoding], 0.0)
        cancelled = first.sum(0) / share[decoding].clamp_min(1e-30)
        if onehot is not None:
            loud = (first >= 0.25 * share[decoding]).float()
            classes = ((onehot.T @ loud) > 0).sum(0)
        else:
            classes = torch.full_like(decoding, min_classes)
        built = (cancelled >= min_cancelled) & (classes >= min_classes)
        result.structured = set(top[decoding[built]].tolist())
    return result


def _dense(caught: dict, state: Mapping[str, torch.Tensor], head: str | None) -> list[str]:
    """The layers the decoders read: linear on per-sample vectors, with a bias, not the head
    (its rows give back penultimate features, not the client's inputs: fishing, dominance
    and head collapse, is what attacks the head)."""
    return [
        name
        for name, (inp, g) in caught.items()
        if inp.dim() == 2 and g.dim() == 2 and f"{name}.bias" in state and name != head
    ]


def _head(model: nn.Module) -> str | None:
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def lone_profile(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
) -> dict[str, dict[int, float]]:
    """Per dense layer, the lone-unit rate at each batch size on ``(x, y)`` (what
    :meth:`Probe.lone` reads, without the decoders)."""
    caught, _ = _capture(model, state, x, y, loss_fn)
    return {name: lone_rates(caught[name][1]) for name in _dense(caught, state, _head(model))}


def probe(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    psnr_db: float = 30.0,
    k: int = 2,
    loss_fn: LossFn | None = None,
    more: tuple[torch.Tensor, torch.Tensor] | None = None,
    joint: bool = False,
) -> Probe:
    """The exposure of the batch ``(x, y)`` in the update of ``model`` holding ``state``
    (``loss_fn``: the client's batch-mean loss; default cross-entropy); ``more``: further
    samples of the client's the lone-unit rates are also read on (dense layers only).
    ``joint``: one pass over the batch and ``more`` together (cheaper where the model has
    dense layers; the same numbers: in evaluation mode a sample's gradients do not depend on
    the samples beside it); otherwise ``more`` gets its own pass only if a dense layer reads
    it."""
    n = len(x)
    extra = {}
    if joint and more is not None and len(more[0]):
        caught, logits = _capture(
            model, state, torch.cat([x, more[0]]), torch.cat([y, more[1]]), loss_fn
        )
        extra = caught
        caught = {name: (inp[:n], g[:n]) for name, (inp, g) in caught.items()}
        logits = logits[:n]
    else:
        caught, logits = _capture(model, state, x, y, loss_fn)
    head = _head(model)
    onehot = F.one_hot(y, int(y.max()) + 1).float()
    dense = _dense(caught, state, head)
    if dense and not extra and more is not None and len(more[0]):
        extra = _capture(model, state, more[0], more[1], loss_fn)[0]
        extra = {name: (None, torch.cat([caught[name][1], extra[name][1]])) for name in dense}
    layers = []
    for name in dense:
        inp, g = caught[name]
        lone = lone_rates(extra[name][1]) if name in extra else None
        layers.append(layer_exposure(name, inp, g, psnr_db, k, onehot=onehot, lone=lone))
    speakers, where, top_share = float(len(x)), "-", 1.0 / len(x)
    for name, (inp, g) in caught.items():
        if name == head:
            continue
        s = g.flatten(1).norm(dim=1) * inp.flatten(1).norm(dim=1)
        pr = participation(s)
        if float(s.sum()) > 0 and pr < speakers:
            speakers, where = pr, name
            top_share = float(s.max() / s.sum())
    error = (logits.softmax(1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)).norm(dim=1)
    return Probe(len(x), layers, speakers, where, participation(error), top_share, head)


class ExposureAudit:
    """The leakage audit as a Guard detector (registry name ``exposure``)."""

    name = "exposure"
    needs_data = True
    runs_after_flag = True  # the Guard runs it even after a cheaper detector flagged
    # calibrated on the broad honest corpus with a probe batch of 64
    THRESHOLDS = (
        # samples any known decoder returns at >= 30 dB: honest models reach 1.0 (64 of 64),
        # so this alone never flags tampering; it is the client's own exposure (strict policy)
        Threshold(
            "exposed_fraction",
            1.2,
            "exposure.isolated",
            floor=0.4,
            # the honest maximum sits close to what attacks reach
            margin=1.2,
            doc="share of the probe batch any known decoder returns",
        ),
        Threshold(
            "pair_fraction",
            0.05,
            "exposure.pairs",
            floor=0.05,  # 3 of 64 samples
            doc="isolated by pairs cancelling >= 8x, 4+ classes",
        ),
        Threshold(
            "silencing",
            3.03,
            "exposure.silencing",
            floor=2.0,
            doc="effective speakers by the head's errors / below the head",
        ),
        Threshold(
            "rise",
            0.25,
            "exposure.rise",
            floor=0.1,
            doc="exposed share above the last accepted model's",
        ),
        Threshold(
            "head_collapse",
            0.469,
            "exposure.head",
            floor=0.3,
            doc="1 - effective rank / (C - 1) of the head's centred rows (honest max 0.234)",
        ),
        Threshold(
            "strict_fraction",
            0.05,
            "exposure.own",
            doc='policy "strict": own exposure above this abstains',
        ),
        # units live for one sample alone, per sample (each counted <= 4), in batches of 16,
        # 32 and 64 drawn from 256 probe samples, over the mean of 4 fresh inits of the
        # client's architecture, layer by layer; a flag also needs FRESH_MARGIN x that mean
        # (trap weights; issue 8). Honest max 0.396, 0.103, 0.064; the floors: 12.8 lone units
        # per batch more than a fresh init (a fifth of a batch of 64)
        *(
            Threshold(
                f"lone{size}",
                default,
                f"exposure.lone{size}",
                floor=floor,
                doc=f"units firing for one sample alone, per sample, in batches of {size}, "
                "over a fresh init",
            )
            for size, default, floor in ((16, 0.8, 0.8), (32, 0.4, 0.4), (64, 0.2, 0.2))
        ),
        # the images read back linearly from a dense layer's feature-map input (a
        # convolutional pass-through, detect/readout.py): median PSNR over the probe batch
        # above fresh inits of the client's architecture (about 10-12 dB); honest trained
        # convnets of the corpus stay within a few dB, pass-throughs reach +20 to +180
        Threshold(
            "readout",
            15.0,
            "exposure.readout",
            floor=15.0,
            doc="dB the client's images come back linearly from the dense layer's feature "
            "map, over fresh inits",
        ),
    )

    def __init__(
        self,
        thresholds: Mapping[str, float] | None = None,
        batch: int = 64,
        psnr_db: float = 30.0,
        neighbours: int = 2,
        seed: int = 0,
        strict: bool = False,
        lone_samples: int = LONE_SAMPLES,
    ) -> None:
        self.t = resolve(self, thresholds)
        self.batch, self.psnr_db, self.k, self.seed = batch, psnr_db, neighbours, seed
        self.lone_samples = max(int(lone_samples), batch)
        self.strict = strict
        self._previous: tuple[tuple[int, float], Probe] | None = None
        self._fresh: tuple[tuple, dict[int, float]] | None = None
        # per template: whether it has dense layers (then one pass reads every probe sample)
        self._joint: tuple[tuple, bool] | None = None
        self._fresh_readout: tuple[tuple, float | None] | None = None
        # the probe samples, keyed by the data's identity (which it keeps alive)
        self._drawn: tuple[tuple, tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _samples(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe batch first, then the further samples the lone-unit rate reads (drawn
        once per data set: the same every round)."""
        assert ctx.data is not None
        key = (id(ctx.data.x), id(ctx.data.y), len(ctx.data), self.seed, self.lone_samples)
        if self._drawn is None or self._drawn[0] != key:
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(ctx.data), generator=g)[: self.lone_samples]
            self._drawn = (key, (ctx.data.x, ctx.data.y), (ctx.data.x[idx], ctx.data.y[idx]))
        return self._drawn[2]

    def measure(self, state: dict[str, torch.Tensor], ctx: Context) -> Probe:
        x, y = self._samples(ctx)
        b = self.batch
        key = (id(ctx.template), tuple(x.shape[1:]))
        joint = self._joint is not None and self._joint == (key, True)
        p = probe(
            ctx.template,
            state,
            x[:b],
            y[:b],
            self.psnr_db,
            self.k,
            ctx.loss,
            (x[b:], y[b:]),
            joint=joint,
        )
        self._joint = (key, bool(p.layers))
        return p

    def fresh_lone(self, ctx: Context) -> dict[str, dict[int, float]]:
        """Per layer and batch size, the lone-unit rate of the client's own architecture
        freshly initialised (its modules' ``reset_parameters``, seeds ``seed`` to ``seed +
        FRESH_SEEDS - 1``), averaged, on the same samples; once per template."""
        key = (id(ctx.template), self.lone_samples, self.seed, len(ctx.data) if ctx.data else 0)
        if self._fresh is None or self._fresh[0] != key:
            x, y = self._samples(ctx)
            total: dict[str, dict[int, float]] = {}
            seeds = range(self.seed, self.seed + FRESH_SEEDS)
            for fresh in fresh_states(ctx.template, seeds):
                state = {k: v.detach() for k, v in fresh.state_dict().items()}
                for layer, rates in lone_profile(fresh, state, x, y, ctx.loss).items():
                    mean = total.setdefault(layer, {})
                    for size, rate in rates.items():
                        mean[size] = mean.get(size, 0.0) + rate / FRESH_SEEDS
            self._fresh = (key, total)
        return self._fresh[1]

    def readout(self, state: dict[str, torch.Tensor], ctx: Context) -> Readout | None:
        """The probe batch read back from the first dense layer's feature-map input, the
        readout found on the further samples (detect/readout.py); None without one."""
        x, _ = self._samples(ctx)
        b = self.batch
        return image_readout(ctx.template, state, x[b:], x[:b]) if len(x) > b + 1 else None

    def fresh_readout(self, ctx: Context) -> float | None:
        """The mean median readout PSNR of ``FRESH_SEEDS`` fresh initialisations of the
        client's architecture on the same samples; once per template."""
        key = (id(ctx.template), self.lone_samples, self.seed, len(ctx.data) if ctx.data else 0)
        if self._fresh_readout is None or self._fresh_readout[0] != key:
            medians = []
            for fresh in fresh_states(ctx.template, range(self.seed, self.seed + FRESH_SEEDS)):
                got = self.readout({k: v.detach() for k, v in fresh.state_dict().items()}, ctx)
                if got is not None:
                    medians.append(got.median)
            self._fresh_readout = (key, sum(medians) / len(medians) if medians else None)
        return self._fresh_readout[1]

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        reason = mismatch(received, ctx.expected)
        if reason:
            return unverifiable(self.name, f"cannot verify: {reason}", start)
        findings, meta = self._judge(self.measure(received, ctx), ctx, received)
        return verdict_from(self.name, findings, start, meta)

    def _judge(self, p: Probe, ctx: Context, received: dict[str, torch.Tensor]):
        t, n = self.t, p.batch
        worst = p.worst
        exposed = len(worst.exposed) if worst else 0
        pairs = len(worst.by_pairs) if worst else 0
        layer = worst.layer if worst else "-"
        built = p.most_structured
        structured = len(built.structured) if built else 0
        # honest models reach every level of single-row exposure (an AdamW-trained mlp on
        # Fashion-MNIST: 64 of 64), so alone it names the client's own exposure; calibrated
        # on honest models its threshold (> 1) never flags: ``rise`` and ``strict`` use it
        bar = t["exposed_fraction"]
        # one sample is no structure: at small batches a lone chance pair in an honest wide
        # layer would otherwise cross a fraction calibrated at a batch of 64
        pair_bar = max(t["pair_fraction"], 2 / n)
        findings = [
            Finding(
                "exposure.isolated",
                layer,
                exposed / n,
                bar,
                f"{exposed} of {n} samples come back at >= {self.psnr_db:g} dB "
                f"({len(worst.by_rows) if worst else 0} by single rows, {pairs} by row pairs)",
                exposed / n >= bar,
            ),
            Finding(
                "exposure.pairs",
                built.layer if built else "-",
                structured / n,
                pair_bar,
                f"{structured} of {n} samples isolated by differencing two units that cancel "
                "8x or more of that sample's signal on samples of 4+ classes: the layer is "
                "built to separate samples (imprint bins)",
                structured / n >= pair_bar,
            ),
        ]
        lonely = p.lone()
        fresh = self.fresh_lone(ctx) if any(lonely.values()) else {}
        model = type(ctx.template).__name__
        closest = 0.0  # the lone-unit excess nearest its bar, as a share of the bar
        for size in sorted({b for rates in lonely.values() for b in rates}):
            # per layer: the excess over the fresh init, against what it must reach there
            excess = {
                layer: (
                    rates[size] - fresh.get(layer, {}).get(size, 0.0),
                    max(t[f"lone{size}"], (FRESH_MARGIN - 1) * fresh.get(layer, {}).get(size, 0)),
                )
                for layer, rates in lonely.items()
                if size in rates
            }
            where = max(excess, key=lambda n: excess[n][0] / excess[n][1])
            value, bar = excess[where]
            closest = max(closest, value / bar)
            rate, init = lonely[where][size], fresh.get(where, {}).get(size, 0.0)
            said = (
                f"{rate:.2f} units per sample fire for that sample alone in batches of {size} "
                f"(each returns it exactly), {value:+.2f} over fresh {model}s ({init:.2f})"
            )
            findings.append(
                Finding(
                    f"exposure.lone{size}",
                    where,
                    value,
                    bar,
                    f"{said}, where honest layers stay within +{bar:.2f}: rows tuned to fire "
                    "for one sample of a batch (trap weights)"
                    if value >= bar
                    else said,
                    value >= bar,
                )
            )
        # the readout costs one forward-mode product per pixel (0.2-0.3 s on 28 x 28): it
        # runs only where rows isolate samples beyond half the lone-unit bar, as trap rows
        # above a pass-through must for the pass-through to leak anything
        read = self.readout(received, ctx) if closest >= READOUT_GATE else None
        if read is not None:
            base = self.fresh_readout(ctx)
            gain = read.median - (base if base is not None else 0.0)
            said = (
                f"your images come back linearly from {read.layer}'s input at {read.median:.0f} "
                f"dB (median), {gain:+.0f} dB over fresh {model}s"
            )
            findings.append(
                Finding(
                    "exposure.readout",
                    read.layer,
                    gain,
                    t["readout"],
                    f"{said}: the convolutions pass the image through (trap rows above them "
                    "return it)"
                    if gain >= t["readout"]
                    else said,
                    gain >= t["readout"],
                )
            )
        if p.head is not None and f"{p.head}.weight" in received:
            collapse = head_collapse(received[f"{p.head}.weight"])
            findings.append(
                Finding(
                    "exposure.head",
                    p.head,
                    collapse,
                    t["head_collapse"],
                    f"the head passes back errors along {(1 - collapse):.0%} of its class "
                    "directions: samples the model gets wrong are silenced, so the update "
                    "comes from few samples (fishing)"
                    if collapse >= t["head_collapse"]
                    else f"the head passes back errors along {(1 - collapse):.0%} of its "
                    "class directions",
                    collapse >= t["head_collapse"],
                )
            )
        silenced = p.should_speak / max(p.speakers, 1e-9)
        findings.append(
            Finding(
                "exposure.silencing",
                p.speakers_layer,
                silenced,
                t["silencing"],
                f"{p.speakers:.2g} effective samples carry the update below the head (the "
                f"loudest {p.top_share:.0%}) where the head's errors say {p.should_speak:.3g} "
                "should: the others are silenced (fishing)",
                silenced >= t["silencing"],
            )
        )
        rise = None
        if ctx.previous is not None and mismatch(ctx.previous, ctx.expected) == "":
            key = (id(ctx.previous), sum(float(v.sum()) for v in ctx.previous.values()))
            if self._previous is None or self._previous[0] != key:
                self._previous = (key, self.measure(ctx.previous, ctx))
            before = self._previous[1].worst
            rise = (exposed - (len(before.exposed) if before else 0)) / n
            findings.append(
                Finding(
                    "exposure.rise",
                    layer,
                    rise,
                    t["rise"],
                    f"exposure rose by {rise * n:.0f} of {n} samples over the last accepted "
                    "model on the same batch",
                    rise >= t["rise"],
                )
            )
        tampered = any(f.flagged for f in findings)
        if self.strict and not tampered:
            findings.append(
                Finding(
                    "exposure.own",
                    layer,
                    exposed / n,
                    t["strict_fraction"],
                    f"your own setup exposes {exposed} of {n} samples (strict policy: above "
                    f"{t['strict_fraction']:.0%})",
                    exposed / n > t["strict_fraction"],
                )
            )
        sentence = (
            f"this round would expose {exposed} of your {n} images at >= {self.psnr_db:g} dB"
            f" ({layer}: {len(worst.by_rows) if worst else 0} by single rows, {pairs} by row "
            "pairs)"
            if exposed
            else f"this round exposes none of your {n} images to the known decoders"
        )
        exposes = sentence
        if tampered:
            sentence += " [tampered]"
        elif exposed:
            sentence += " [not flagged as tampering: your own setup's exposure]"
        meta = {
            "exposure": {
                "exposed": exposed,
                "batch": n,
                "psnr_db": self.psnr_db,
                "layer": layer,
                "by_rows": len(worst.by_rows) if worst else 0,
                "by_pairs": pairs,
                "structured_pairs": structured,
                "readout_db": read.median if read is not None else None,
                "lone_units": {size: rate for size, (rate, _) in p.most_lone().items()},
                "speakers": p.speakers,
                "should_speak": p.should_speak,
                "top_share": p.top_share,
                "rise": rise,
                "tampered": tampered,
                "sentence": sentence,
                "exposes": exposes,  # without the audit's own bracket
                "layers": {e.layer: len(e.exposed) for e in p.layers},
            }
        }
        return findings, meta
