"""Image grids (matplotlib): the client's originals above what the server reconstructed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradguard.metrics import Match


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    x = image.detach().float().clamp(0, 1).cpu().numpy()
    return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))


def save_rows(
    rows: list[list[torch.Tensor | None]],
    path: str | Path,
    row_labels: list[str] | None = None,
    captions: list[list[str]] | None = None,
    title: str | None = None,
    cell: float = 0.9,
) -> Path:
    """Write a grid of images (``None`` leaves a cell blank) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(1, max(len(r) for r in rows))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(cell * n_cols + 0.8, cell * n_rows + 0.5), squeeze=False
    )
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            img = row[j] if j < len(row) else None
            if img is not None:
                ax.imshow(_to_hwc(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if captions and j < len(captions[i]) and captions[i][j]:
                ax.set_title(captions[i][j], fontsize=6, pad=1)
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_reconstruction_grid(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    matching: Match,
    path: str | Path,
    max_images: int = 16,
    threshold_db: float = 30.0,
    title: str | None = None,
) -> Path:
    """Originals on top, each one's matched reconstruction below with its PSNR.

    Shows ``max_images`` originals: those matched to a reconstruction first, then the
    rest, each in batch order (no picking of the best); an original with no match gets a
    blank cell, and ``*`` marks a leak (PSNR >= ``threshold_db``).
    """
    by_true = {
        int(t): (int(r), float(p))
        for t, r, p in zip(matching.true_index, matching.recon_index, matching.psnr, strict=True)
    }
    # Originals that got a reconstruction first, each group in batch order (no cherry-picking).
    order = sorted(range(len(originals)), key=lambda i: i not in by_true)[:max_images]
    top = [originals[i] for i in order]
    bottom, captions = [], []
    for i in order:
        r, p = by_true.get(i, (None, None))
        bottom.append(None if r is None else reconstructions[r])
        captions.append("" if p is None else f"{p:.0f} dB" + (" *" if p >= threshold_db else ""))
    return save_rows(
        [top, bottom],
        path,
        row_labels=["original", "reconstructed"],
        captions=[[""] * len(top), captions],
        title=title,
    )


__all__ = ["save_reconstruction_grid", "save_rows"]
