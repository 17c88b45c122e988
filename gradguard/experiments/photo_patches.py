"""A real colour image data set built offline from scikit-learn's two sample photographs.

``load_sample_images()`` ships two real photos (``china.jpg``, ``flower.jpg``, 427 x 640
RGB). Each photo is cut into a 2 x 2 grid of regions; a class is one (photo, region) pair,
so there are 8 classes of natural 32 x 32 colour patches taken at seeded random positions
inside their region. The patches are written as PNGs, one subfolder per class, into a cache
folder (generated at run time, never committed) and read back through
:mod:`gradguard.data.folder` like any image folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradguard.data import Dataset
from gradguard.data.folder import load_dir

DEFAULT_ROOT = Path("runs/cache")
REGIONS = ("top-left", "top-right", "bottom-left", "bottom-right")


def build(root: Path = DEFAULT_ROOT, per_class: int = 120, size: int = 32, seed: int = 0) -> Path:
    """Write the patch folder under ``root`` (once) and return its path."""
    from matplotlib import pyplot as plt
    from sklearn.datasets import load_sample_images

    folder = Path(root) / f"photo-patches-{size}px-{per_class}-seed{seed}"
    done = folder / ".complete"
    if done.exists():
        return folder
    photos = load_sample_images()
    rng = np.random.default_rng(seed)
    for path, image in zip(photos.filenames, photos.images, strict=True):
        h, w = image.shape[0] // 2, image.shape[1] // 2
        for r, region in enumerate(REGIONS):
            top, left = (r // 2) * h, (r % 2) * w
            out = folder / f"{Path(path).stem}-{region}"
            out.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                y = top + int(rng.integers(0, h - size + 1))
                x = left + int(rng.integers(0, w - size + 1))
                plt.imsave(out / f"{i:04d}.png", image[y : y + size, x : x + size])
    done.write_text("ok\n")
    return folder


def load(root: Path = DEFAULT_ROOT, **options) -> tuple[Dataset, Dataset]:
    """Train and test splits (80/20, seeded) of the patch folder, built if missing."""
    return load_dir(build(root, **options))
