"""Secure aggregation by pairwise additive masking (Bonawitz et al. 2017), in fixed point.

Each client encodes its weighted update as integers modulo 2^62 (scale 2^20) and adds, for
every other participant, a mask drawn from a seed the two share (added by one, subtracted by
the other). Each masked vector is uniformly random to the server; their sum is the true sum,
which is all the server ever learns. The participant set is fixed before masking (clients
that abstain never mask), so no dropout recovery is needed in this simulation.
"""

from __future__ import annotations

import torch

from gradguard.errors import GradguardError

_MOD = 2**62
_SCALE = 2**20
_LIMIT = _MOD // 2 // _SCALE  # largest |value| (of a sum, too) that decodes correctly


def _pair_mask(seed: int, i: int, j: int, size: int) -> torch.Tensor:
    lo, hi = min(i, j), max(i, j)
    key = (seed * 1_000_003 + lo) * 1_000_033 + hi
    g = torch.Generator().manual_seed(key % 2**63)
    return torch.randint(0, _MOD, (size,), generator=g, dtype=torch.int64)


def mask(vector: torch.Tensor, client: int, participants: list[int], seed: int) -> torch.Tensor:
    """What client ``client`` sends: its fixed-point vector plus the pairwise masks."""
    v = vector.double()
    if not bool(torch.isfinite(v).all()) or float(v.abs().max()) >= _LIMIT:
        raise GradguardError(
            f"client {client}: update is not finite or exceeds the "
            f"secure-aggregation range of +-{_LIMIT}"
        )
    fixed = torch.round(v * _SCALE).to(torch.int64) % _MOD
    for other in participants:
        if other == client:
            continue
        m = _pair_mask(seed, client, other, vector.numel())
        fixed = (fixed + m) % _MOD if client < other else (fixed - m) % _MOD
    return fixed


def unmask_sum(masked: list[torch.Tensor]) -> torch.Tensor:
    """The server's view: the sum of the masked vectors, decoded from fixed point (float64)."""
    total = torch.zeros_like(masked[0])
    for m in masked:
        total = (total + m) % _MOD
    signed = torch.where(total >= _MOD // 2, total - _MOD, total)
    return signed.double().div(_SCALE)


def secure_sum(vectors: list[torch.Tensor], participants: list[int], seed: int) -> torch.Tensor:
    """Sum of ``vectors`` as the server computes it from masked contributions."""
    if len(set(participants)) != len(participants):
        raise GradguardError("secure aggregation needs distinct participant ids")
    return unmask_sum(
        [mask(v, c, participants, seed) for v, c in zip(vectors, participants, strict=True)]
    )
