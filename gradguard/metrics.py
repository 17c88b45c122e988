"""Image-reconstruction and classification metrics.

PSNR is ``10 log10(1 / MSE)`` for images in [0, 1]; SSIM is scikit-image's. Reconstructions
are matched to the true batch by the Hungarian algorithm (SciPy) on PSNR before scoring,
as in the gradient-inversion literature (anchors: passive gradient inversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PSNR_CAP = 100.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per image of two batches (N x C x H x W) in [0, 1], capped at 100 dB."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP / 10)))).clamp(max=PSNR_CAP)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per image pair (scikit-image), window shrunk to fit small images."""
    out = []
    for x, y in zip(a.float().clamp(0, 1).numpy(), b.float().clamp(0, 1).numpy(), strict=True):
        side = min(x.shape[1:])
        if side < 3:  # no sliding window fits: one window over the whole image
            out.append(_global_ssim(x.astype(np.float64), y.astype(np.float64)))
            continue
        win = min(7, side if side % 2 else side - 1)
        from skimage.metrics import structural_similarity  # lazy: clients never score SSIM

        out.append(structural_similarity(x, y, data_range=1.0, channel_axis=0, win_size=win))
    return torch.tensor(out, dtype=torch.float32)


def _global_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM (Wang et al. 2004, K1 = 0.01, K2 = 0.03) with the whole image as the window."""
    c1, c2 = 0.01**2, 0.03**2
    mx, my = x.mean(), y.mean()
    vx, vy, cxy = x.var(), y.var(), ((x - mx) * (y - my)).mean()
    return float((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))


@dataclass(frozen=True)
class Match:
    """Reconstructions matched one-to-one to the true images they best resemble."""

    true_index: np.ndarray  # index into the true batch, per matched reconstruction
    recon_index: np.ndarray  # index into the reconstructions
    psnr: np.ndarray  # PSNR of each matched pair
    ssim: np.ndarray

    def leaked(self, threshold_db: float = 30.0) -> int:
        return int((self.psnr >= threshold_db).sum())


def match(true: torch.Tensor, recon: torch.Tensor) -> Match:
    """Hungarian matching of ``recon`` to ``true`` maximising total PSNR."""
    if len(recon) == 0:
        empty = np.zeros(0)
        return Match(empty.astype(int), empty.astype(int), empty, empty)
    true, recon = true.float().clamp(0, 1), recon.float().clamp(0, 1)
    t = true.flatten(1)
    r = recon.flatten(1)
    mse = torch.cdist(r.double(), t.double()).pow(2) / t.shape[1]
    cost = (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP / 10)))).clamp(max=PSNR_CAP)
    from scipy.optimize import linear_sum_assignment  # lazy: a training client never matches

    rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    p = cost.numpy()[rows, cols]
    s = ssim(true[cols], recon[rows]).numpy()
    return Match(cols, rows, p, s)


def leaked_fraction(true: torch.Tensor, recon: torch.Tensor, threshold_db: float = 30.0) -> float:
    """Fraction of the true batch recovered at matched PSNR >= ``threshold_db``."""
    return match(true, recon).leaked(threshold_db) / max(1, len(true))


@torch.no_grad()
def accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    model.train(was_training)
    return correct / max(1, len(x))
