"""MNIST-style IDX files (raw or ``.gz``), as Debian's ``dataset-fashion-mnist`` installs them."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import torch

from gradguard.data.dataset import Dataset
from gradguard.errors import DataError

_UBYTE = 0x08
_MAX_BYTES = 1 << 30  # decompressed; a bigger "IDX file" is refused (gzip bombs too)
_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes; every malformed file raises :class:`DataError`."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file ({type(e).__name__}: {e})") from None
    if len(raw) > _MAX_BYTES:
        raise DataError(f"{path}: larger than {_MAX_BYTES} bytes; not a plausible IDX file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _UBYTE:
        raise DataError(f"{path}: IDX type 0x{raw[2]:02x} is not supported (only unsigned bytes)")
    ndim = raw[3]
    if ndim not in (1, 3):
        raise DataError(
            f"{path}: IDX file has {ndim} dimensions; expected 1 (labels) or 3 (images)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0 or count > _MAX_BYTES:
        raise DataError(f"{path}: implausible IDX shape {shape}")
    if len(raw) - header != count:
        raise DataError(
            f"{path}: IDX declares {count} values of shape {shape} "
            f"but holds {len(raw) - header}: truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if cand.is_file():
            return cand
    return None


def looks_like_idx(path: Path) -> bool:
    return path.is_dir() and _find(path, _SPLITS["train"][0]) is not None


def load_dir(folder: Path) -> tuple[Dataset, Dataset]:
    """Train and test splits from a folder holding the four standard IDX files."""
    out = []
    for split, (img_stem, lab_stem) in _SPLITS.items():
        img, lab = _find(folder, img_stem), _find(folder, lab_stem)
        if img is None or lab is None:
            raise DataError(f"{folder}: missing {img_stem}[.gz] or {lab_stem}[.gz] ({split} split)")
        images, labels = read_idx(img), read_idx(lab)
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{img}: images must be 3-D and labels 1-D")
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{img}: {images.shape[0]} images but {lab} has {labels.shape[0]} labels"
            )
        if labels.max() >= 10:
            raise DataError(f"{lab}: label {labels.max()} out of range 0..9")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        out.append(Dataset(x, torch.from_numpy(labels.astype(np.int64)), 10, folder.name))
    return out[0], out[1]


def system_dir(name: str) -> Path | None:
    """Where Debian's ``dataset-<name>`` package put its files, if it is installed."""
    default = Path("/usr/share/datasets") / name
    if looks_like_idx(default):
        return default
    if shutil.which("dpkg") is None:
        return None
    try:
        listing = subprocess.run(
            ["dpkg", "-L", f"dataset-{name}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        if line.endswith(_SPLITS["train"][0] + ".gz") or line.endswith(_SPLITS["train"][0]):
            return Path(line).parent
    return None


def load_named(name: str) -> tuple[Dataset, Dataset]:
    folder = system_dir(name)
    if folder is None:
        raise DataError(
            f"{name} is not installed: `apt-get install dataset-{name}`, "
            f"or pass the folder holding its IDX files as a path"
        )
    train, test = load_dir(folder)
    return (Dataset(train.x, train.y, 10, name), Dataset(test.x, test.y, 10, name))
