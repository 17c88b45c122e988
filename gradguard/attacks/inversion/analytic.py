"""Analytic inversion of a linear layer's gradient (seed 000, appendix A.1.1).

For ``h = W x + b`` the gradient of one sample is ``dW_i = g_i x`` and ``db_i = g_i``, so
``x = dW_i / db_i`` for any row ``i`` that only that sample activated (trap weights,
Boenisch et al.). An imprint layer (Fowl et al., "Robbing the Fed") has rows that fire for
nested sets of samples (every sample above bin ``i``'s threshold); subtracting adjacent
rows leaves the samples of one bin: ``x = (dW_i - dW_{i+1}) / (db_i - db_{i+1})``.
Both are exact when one sample falls in the row (bin) and mix samples otherwise.
"""

from __future__ import annotations

import torch

#: A row (or bin) whose bias gradient is below this fraction of the largest is taken as empty.
EMPTY_TOL = 1e-5


def invert_rows(
    dw: torch.Tensor, db: torch.Tensor, tol: float = EMPTY_TOL, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dW_i / db_i`` for every row with a non-negligible bias gradient.

    With ``limit``, only that many rows with the largest ``|db_i|`` (the strongest
    signals). Returns the inputs (rows x features) and the indices of their rows.
    """
    dw, db = dw.double(), db.double()
    scale = db.abs().max()
    if scale == 0:
        return dw.new_zeros(0, dw.shape[1]).float(), torch.zeros(0, dtype=torch.long)
    rows = torch.nonzero(db.abs() > tol * scale).flatten()
    if limit is not None and len(rows) > limit:
        rows = rows[torch.argsort(db[rows].abs(), descending=True)[:limit]].sort().values
    return (dw[rows] / db[rows, None]).float(), rows


def invert_bins(
    dw: torch.Tensor,
    db: torch.Tensor,
    order: torch.Tensor,
    tol: float = EMPTY_TOL,
    limit: int | None = None,
    gain: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Imprint recovery: difference rows adjacent in ``order`` (thresholds ascending).

    Row ``order[k]`` fires for every sample whose measurement exceeds the ``k``-th
    threshold, so row ``k`` minus row ``k + 1`` holds exactly the samples of bin ``k``;
    the top bin is its row alone. ``gain[i]`` (default 1) is the factor row ``i``'s
    backpropagated gradient carries (the next layer's column scale); it is divided out
    first. Returns one input per non-empty bin and the bin indices.
    """
    dw, db = dw.double()[order], db.double()[order]
    if gain is not None:
        g = gain.double()[order]
        dw, db = dw / g[:, None], db / g
    zero_w, zero_b = dw.new_zeros(1, dw.shape[1]), db.new_zeros(1)
    ddw = dw - torch.cat([dw[1:], zero_w])
    ddb = db - torch.cat([db[1:], zero_b])
    features, rows = invert_rows(ddw, ddb, tol, limit)
    return features, order[rows]


def deduplicate(
    candidates: torch.Tensor, limit: int, same_db: float = 40.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep at most ``limit`` distinct candidates, those repeated most often first.

    Many trap rows fire for the same lone sample and give the same input, while a mixture
    of several samples is weighted differently in every row. Candidates within ``same_db``
    dB PSNR of each other (values in [0, 1]) are one image. Ties go to candidates that
    stray least outside [0, 1] (a mixture with gradients of opposite signs extrapolates).
    Returns the kept images and how many candidates each stands for.
    """
    if len(candidates) == 0:
        return candidates, torch.zeros(0, dtype=torch.long)
    raw = candidates.flatten(1).double()
    flat = raw.clamp(0, 1)
    stray = (raw - flat).abs().mean(1)
    mse = torch.cdist(flat, flat).pow(2) / flat.shape[1]
    same = mse <= 10 ** (-same_db / 10)
    counts = same.sum(1)
    taken = torch.zeros(len(flat), dtype=torch.bool)
    keep, sizes = [], []
    by_stray = torch.argsort(stray, stable=True)
    order = by_stray[torch.argsort(counts[by_stray], descending=True, stable=True)]
    for i in order.tolist():
        if taken[i]:
            continue
        group = same[i] & ~taken
        taken |= group
        keep.append(i)
        sizes.append(int(group.sum()))
        if len(keep) == limit:
            break
    return candidates[keep], torch.tensor(sizes)
