"""A folder of images with one subfolder per class (PNG or JPEG), read with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradguard.data.dataset import Dataset
from gradguard.errors import DataError

_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _read(path: Path) -> np.ndarray:
    from matplotlib import image as mpimg

    try:
        img = np.asarray(mpimg.imread(path))
    except Exception as e:  # noqa: BLE001 - a corrupt image is one clear error
        raise DataError(f"{path}: not a readable image ({type(e).__name__})") from None
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"{path}: unsupported image shape {img.shape}")
    if img.shape[2] in (2, 4):  # drop the alpha channel
        img = img[..., :-1]
    return img.transpose(2, 0, 1)


def load_dir(folder: Path, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """All images under ``folder/<class>/``; a seeded split into train and test."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder}: no class subfolders (expected {folder}/<class>/<image>.png)")
    images, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((folder / name).iterdir()):
            if f.suffix.lower() in _SUFFIXES and f.is_file():
                images.append(_read(f))
                labels.append(c)
    if not images:
        raise DataError(f"{folder}: no PNG or JPEG images in its class subfolders")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(
            f"{folder}: images differ in size or channels {sorted(shapes)[:3]}; "
            "resize them to one shape"
        )
    x = torch.from_numpy(np.stack(images)).clamp(0, 1)
    y = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(len(y) * test_fraction)) if len(y) > 1 else 0
    test, train = order[:n_test], order[n_test:]
    full = Dataset(x, y, len(classes), folder.name)
    return full.subset(train), (full.subset(test) if n_test else full.subset(train))
