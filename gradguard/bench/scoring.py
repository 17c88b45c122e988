"""Leak scoring, the one path every engine and the single-round runner share: each
reconstruction is matched to the client's true images by the Hungarian algorithm on PSNR
(:func:`gradguard.metrics.match`); a true image matched at ``threshold_db`` or more leaked."""

from __future__ import annotations

import torch

from gradguard.bench.records import ClientLeak
from gradguard.metrics import match


def score_leak(
    client_id: int,
    truth: torch.Tensor | None,
    recon: torch.Tensor,
    threshold_db: float,
    keep: int = 8,
) -> ClientLeak:
    """Score ``recon`` against ``truth``; keeps the ``keep`` best pairs for the report."""
    if truth is None:
        return ClientLeak(client_id, 0, len(recon), 0.0)
    m = match(truth, recon)
    order = m.psnr.argsort()[::-1][:keep].copy()
    return ClientLeak(
        client_id,
        m.leaked(threshold_db),
        len(recon),
        float(m.psnr.mean()) if len(m.psnr) else 0.0,
        truth[m.true_index[order]].clone(),
        recon[m.recon_index[order]].clone(),
        float(m.ssim.mean()) if len(m.ssim) else 0.0,
        len(truth),
        m,
    )


def leaked_fraction(leaks: list[ClientLeak]) -> float:
    """Leaked true images over all true images the leaks were scored against."""
    return sum(k.leaked for k in leaks) / max(1, sum(k.images for k in leaks))
