"""CIFAR-10/100 python batches, read with a restricted unpickler.

The batches are pickles. A pickle from a user's disk may be hostile, so
:class:`_BatchUnpickler` admits only the globals a CIFAR batch needs (NumPy arrays and their
dtypes) and refuses everything else before it is called: nothing in the file executes.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from gradguard.data.dataset import Dataset
from gradguard.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}
_MAX_BYTES = 512 * 1024 * 1024


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: uint8 images (N x 3 x 32 x 32) and labels."""
    try:
        size = path.stat().st_size
        if size > _MAX_BYTES:
            raise DataError(f"{path}: {size} bytes is too large for a CIFAR batch")
        blob = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a hostile pickle is one clear error
        raise DataError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict):
        raise DataError(f"{path}: a CIFAR batch must be a dict, got {type(blob).__name__}")
    data = blob.get(b"data", blob.get("data"))
    labels = next(
        (blob[k] for k in (b"labels", b"fine_labels", "labels", "fine_labels") if k in blob), None
    )
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        raise DataError(f"{path}: 'data' must be a uint8 array of shape N x 3072")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


def looks_like_cifar(path: Path) -> bool:
    return path.is_dir() and ((path / "data_batch_1").is_file() or (path / "train").is_file())


def load_dir(folder: Path) -> tuple[Dataset, Dataset]:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``)."""
    if (folder / "data_batch_1").is_file():
        train_files = sorted(folder.glob("data_batch_[0-9]*"))
        test_files, classes = [folder / "test_batch"], 10
    else:
        train_files, test_files, classes = [folder / "train"], [folder / "test"], 100
    out = []
    for files in (train_files, test_files):
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{missing[0]}: missing CIFAR batch")
        parts = [read_batch(f) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if y.min() < 0 or y.max() >= classes:
            raise DataError(f"{folder}: labels out of range 0..{classes - 1}")
        out.append(
            Dataset(
                torch.from_numpy(x.astype(np.float32) / 255.0),
                torch.from_numpy(y),
                classes,
                f"cifar{classes}",
            )
        )
    return out[0], out[1]
