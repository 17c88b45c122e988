"""Aggregators over client updates: weighted mean and the Byzantine-robust rules.

Krum / Multi-Krum (Blanchard et al. 2017), coordinate-wise median and trimmed mean
(Yin et al. 2018). Each takes the stacked, flattened deltas (n x D) and the example counts.

Every rule first drops non-finite updates (one NaN would win Krum's ranking, since every
distance to it is NaN, and would spread through a mean), logging each rejection with its
reason; no finite update left, bad weights, or a non-finite result is an error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

from gradguard.errors import GradguardError

log = logging.getLogger("gradguard.fl")


def finite_rows(v: torch.Tensor, ids: list | None = None) -> torch.Tensor:
    """Boolean mask of the rows of ``v`` that hold only finite values; logs each rejection."""
    ok = torch.isfinite(v).all(1) if v.ndim == 2 else torch.isfinite(v).reshape(len(v), -1).all(1)
    for i in (~ok).nonzero().flatten().tolist():
        who = ids[i] if ids is not None else i
        bad = int((~torch.isfinite(v[i])).sum())
        log.warning("rejected the update of client %s: %d non-finite values (NaN/Inf)", who, bad)
    return ok


def _finite_only(rule: Callable) -> Callable:
    """Run ``rule`` on the finite rows only, with valid weights; refuse a non-finite result."""

    @functools.wraps(rule)
    def wrapped(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
        if v.ndim != 2 or len(v) == 0:
            raise GradguardError(
                f"expected a non-empty n x D stack of updates, got {tuple(v.shape)}"
            )
        if weights.shape != (len(v),):
            raise GradguardError(f"{len(v)} updates but {tuple(weights.shape)} weights")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise GradguardError("aggregation weights must be finite and non-negative")
        ok = finite_rows(v)
        if not bool(ok.any()):
            raise GradguardError("every update holds non-finite values: nothing to aggregate")
        if not bool(ok.all()):
            v, weights = v[ok], weights[ok]
        if f < 0:
            raise GradguardError(f"f must be >= 0 (got {f})")
        out = rule(v, weights, f)
        if not bool(torch.isfinite(out).all()):
            raise GradguardError(f"{rule.__name__} produced a non-finite aggregate (overflow)")
        return out

    return wrapped


def _mean(v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    total = weights.double().sum()
    if not total > 0:
        raise GradguardError("aggregation weights sum to zero")
    w = weights.double() / total
    return (w[:, None] * v.double()).sum(0).to(v.dtype)


@_finite_only
def mean(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """FedAvg's mean weighted by example counts (summed in float64)."""
    return _mean(v, weights)


def _krum_scores(v: torch.Tensor, f: int) -> torch.Tensor:
    n = len(v)
    k = max(1, n - f - 2)
    d = torch.cdist(v.double(), v.double()).pow(2)
    d.fill_diagonal_(float("inf"))
    return d.topk(min(k, n - 1), largest=False).values.sum(1)


@_finite_only
def krum(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """The one update with the smallest sum of squared distances to its n - f - 2 nearest
    neighbours."""
    if len(v) < 2:
        return v[0]
    return v[_krum_scores(v, f).argmin()]


@_finite_only
def multikrum(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Weighted mean of the n - f updates with the best Krum scores."""
    if len(v) < 2:
        return v[0]
    m = max(1, len(v) - f)
    chosen = _krum_scores(v, f).topk(m, largest=False).indices
    return _mean(v[chosen], weights[chosen])


@_finite_only
def median(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Coordinate-wise median (mean of the two middle values when n is even)."""
    n = len(v)
    if n % 2:
        return v.median(0).values
    return v.sort(0).values[n // 2 - 1 : n // 2 + 1].mean(0)


@_finite_only
def trimmed(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Coordinate-wise mean after dropping the ``f`` largest and ``f`` smallest values
    (at least 10% each side)."""
    n = len(v)
    k = min(max(f, int(0.1 * n)), (n - 1) // 2)
    s = v.sort(0).values
    return s[k : n - k].mean(0)


AGGREGATORS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "mean": mean,
    "krum": krum,
    "multikrum": multikrum,
    "median": median,
    "trimmed": trimmed,
}


def aggregate(name: str, vectors: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Aggregate ``vectors`` (n x D) with rule ``name``; ``f`` is the number of Byzantine
    clients the rule should tolerate (Krum, Multi-Krum, trimmed mean)."""
    if name not in AGGREGATORS:
        raise GradguardError(f"unknown aggregator {name!r}; valid: {', '.join(AGGREGATORS)}")
    if len(vectors) == 0:
        raise GradguardError("no updates to aggregate")
    return AGGREGATORS[name](vectors, weights.to(vectors.dtype), f)
