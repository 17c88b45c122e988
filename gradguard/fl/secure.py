"""Secure aggregation by pairwise additive masking (Bonawitz et al. 2017), in fixed point.

Each client encodes its weighted update as integers modulo 2^62 (value x 2^bits) and adds,
for every other participant, a mask drawn from a seed the two share (added by one,
subtracted by the other). Each masked vector is uniformly random to the server; their sum
is the true sum, which is all the server ever learns. The participant set is fixed before
masking (clients that abstain never mask), so no dropout recovery is needed here.

Fixed point cannot represent every sum: values above the range wrap around modulo 2^62 and
values below the resolution 2^-bits vanish. :func:`secure_sum` therefore fits ``bits`` to
the round: the participants agree on the largest binary exponent ``e`` of any |value| (one
integer per round, the only extra thing revealed) and use ``bits = 60 - e - ceil(log2 n)``,
so the sum of n values below 2^e stays below 2^60 (no wrap) and each value keeps about 57
significant bits (more than float64 holds). :func:`mask` with a fixed ``bits`` refuses a
vector that could wrap once summed over the participants, or that would lose precision.
"""

from __future__ import annotations

import math

import torch

from gradguard.errors import GradguardError

_MOD = 2**62
SCALE_BITS = 20  # the fixed default of :func:`mask` and :func:`unmask_sum`
_HEADROOM = 60  # sums stay below 2^60, half the signed range 2^61
_MAX_BITS = 1000  # 2^bits must stay a finite float64
PRECISION = 1e-4  # largest relative L2 error the encoding may add to one vector


def _pair_mask(seed: int, i: int, j: int, size: int) -> torch.Tensor:
    lo, hi = min(i, j), max(i, j)
    key = (seed * 1_000_003 + lo) * 1_000_033 + hi
    g = torch.Generator().manual_seed(key % 2**63)
    return torch.randint(0, _MOD, (size,), generator=g, dtype=torch.int64)


def limit(bits: int, n: int) -> float:
    """The largest |value| a client may send when ``n`` values are summed at ``bits``."""
    return 2.0 ** (_HEADROOM - bits) / n


def fit_bits(vectors: list[torch.Tensor]) -> int:
    """Fraction bits for this round: the sum of every vector cannot wrap, and each value keeps
    about 57 significant bits relative to the round's largest |value|."""
    peak = max((float(v.double().abs().max()) for v in vectors if v.numel()), default=0.0)
    if not math.isfinite(peak):
        raise GradguardError("secure aggregation: an update is not finite")
    e = math.frexp(peak)[1] if peak > 0 else 0  # peak < 2^e
    return max(0, min(_MAX_BITS, _HEADROOM - e - math.ceil(math.log2(max(1, len(vectors))))))


def mask(
    vector: torch.Tensor,
    client: int,
    participants: list[int],
    seed: int,
    bits: int = SCALE_BITS,
) -> torch.Tensor:
    """What client ``client`` sends: its fixed-point vector plus the pairwise masks.

    Refuses (GradguardError) a non-finite vector, one whose values could make the sum over
    the participants wrap, and one the encoding would distort by more than ``PRECISION``.
    """
    v = vector.double()
    n = max(1, len(participants))
    top = limit(bits, n)
    if not bool(torch.isfinite(v).all()) or (v.numel() and float(v.abs().max()) > top):
        raise GradguardError(
            f"client {client}: update is not finite or exceeds the secure-aggregation range "
            f"of +-{top:.3g} for {n} participants at {bits} fraction bits"
        )
    scaled = torch.round(torch.ldexp(v, torch.tensor(bits, dtype=torch.float64)))
    err = float((torch.ldexp(scaled, torch.tensor(-bits, dtype=torch.float64)) - v).norm())
    norm = float(v.norm())
    if norm > 0 and err > PRECISION * norm:
        raise GradguardError(
            f"client {client}: fixed point at {bits} fraction bits loses precision "
            f"(relative error {err / norm:.2g} > {PRECISION:g}); fit the scale to the round"
        )
    fixed = scaled.to(torch.int64) % _MOD
    for other in participants:
        if other == client:
            continue
        m = _pair_mask(seed, client, other, vector.numel())
        fixed = (fixed + m) % _MOD if client < other else (fixed - m) % _MOD
    return fixed


def unmask_sum(masked: list[torch.Tensor], bits: int = SCALE_BITS) -> torch.Tensor:
    """The server's view: the sum of the masked vectors, decoded from fixed point (float64)."""
    total = torch.zeros_like(masked[0])
    for m in masked:
        total = (total + m) % _MOD
    signed = torch.where(total >= _MOD // 2, total - _MOD, total)
    return torch.ldexp(signed.double(), torch.tensor(-bits, dtype=torch.float64))


def secure_sum(
    vectors: list[torch.Tensor], participants: list[int], seed: int, bits: int | None = None
) -> torch.Tensor:
    """Sum of ``vectors`` as the server computes it from masked contributions, at ``bits``
    fraction bits (None: fitted to the round by :func:`fit_bits`)."""
    if not vectors:
        raise GradguardError("secure aggregation needs at least one participant")
    if len(set(participants)) != len(participants):
        raise GradguardError("secure aggregation needs distinct participant ids")
    bits = fit_bits(vectors) if bits is None else bits
    return unmask_sum(
        [mask(v, c, participants, seed, bits) for v, c in zip(vectors, participants, strict=True)],
        bits,
    )
