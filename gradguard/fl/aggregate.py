"""Aggregators over client updates: weighted mean and the Byzantine-robust rules.

Krum / Multi-Krum (Blanchard et al. 2017), coordinate-wise median and trimmed mean
(Yin et al. 2018). Each takes the stacked, flattened deltas (n x D) and the example counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gradguard.errors import GradguardError


def mean(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """FedAvg's mean weighted by example counts."""
    w = weights / weights.sum()
    return (w[:, None] * v).sum(0)


def _krum_scores(v: torch.Tensor, f: int) -> torch.Tensor:
    n = len(v)
    k = max(1, n - f - 2)
    d = torch.cdist(v, v).pow(2)
    d.fill_diagonal_(float("inf"))
    return d.topk(min(k, n - 1), largest=False).values.sum(1)


def krum(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """The one update with the smallest sum of squared distances to its n - f - 2 nearest
    neighbours."""
    if len(v) < 2:
        return v[0]
    return v[_krum_scores(v, f).argmin()]


def multikrum(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Weighted mean of the n - f updates with the best Krum scores."""
    if len(v) < 2:
        return v[0]
    m = max(1, len(v) - f)
    chosen = _krum_scores(v, f).topk(m, largest=False).indices
    return mean(v[chosen], weights[chosen])


def median(v: torch.Tensor, weights: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Coordinate-wise median (mean of the two middle values when n is even)."""
    n = len(v)
    if n % 2:
        return v.median(0).values
    return v.sort(0).values[n // 2 - 1 : n // 2 + 1].mean(0)


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
