"""Secure aggregation by pairwise additive masking (Bonawitz et al. 2017), in fixed point.

Each client encodes its weighted update as integers modulo 2^32 and adds, for every other
participant, a mask drawn from a seed the two share (added by one, subtracted by the
other). Masked vectors are uniformly random to the server; their sum is the true sum, which
is all the server ever learns. The participant set is fixed before masking (clients that
abstain never mask), so no dropout recovery is needed in this simulation.
"""

from __future__ import annotations

import torch

_MOD = 2**32
_SCALE = 2**16


def _pair_mask(seed: int, i: int, j: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(hash((seed, min(i, j), max(i, j))) % 2**63)
    return torch.randint(0, _MOD, (size,), generator=g, dtype=torch.int64)


def mask(vector: torch.Tensor, client: int, participants: list[int], seed: int) -> torch.Tensor:
    """What client ``client`` sends: its fixed-point vector plus the pairwise masks."""
    fixed = torch.round(vector.double() * _SCALE).to(torch.int64) % _MOD
    for other in participants:
        if other == client:
            continue
        m = _pair_mask(seed, client, other, vector.numel())
        fixed = (fixed + m) % _MOD if client < other else (fixed - m) % _MOD
    return fixed


def unmask_sum(masked: list[torch.Tensor]) -> torch.Tensor:
    """The server's view: the sum of the masked vectors, decoded from fixed point."""
    total = torch.zeros_like(masked[0])
    for m in masked:
        total = (total + m) % _MOD
    signed = torch.where(total >= _MOD // 2, total - _MOD, total)
    return signed.double().div(_SCALE).float()


def secure_sum(vectors: list[torch.Tensor], participants: list[int], seed: int) -> torch.Tensor:
    """Sum of ``vectors`` as the server computes it from masked contributions."""
    return unmask_sum([mask(v, c, participants, seed)
                       for v, c in zip(vectors, participants, strict=True)])
