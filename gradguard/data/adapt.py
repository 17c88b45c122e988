"""What PyTorch users have for data, turned once into gradguard's :class:`Dataset`.

Accepted: a :class:`Dataset`; ``(x, y)`` tensors or arrays; a map-style
``torch.utils.data.Dataset`` whose items are ``(input, label)`` (``TensorDataset``
included); a ``DataLoader`` yielding ``(inputs, labels)`` batches. At most ``limit``
examples are kept (the Guard needs a local sample, not the whole data set). Anything else,
or inputs that are not float image batches with integer class labels, raises
:class:`~gradguard.errors.DataError` with what was received and what is expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gradguard.data import Dataset
from gradguard.errors import DataError

#: Examples kept from a torch Dataset or DataLoader (a local sample is enough).
DEFAULT_LIMIT = 2048
EXPECTED = (
    "a gradguard Dataset, (x, y) tensors, a torch Dataset of (input, label) items or a "
    "DataLoader of (inputs, labels) batches"
)


def as_dataset(
    data: Any,
    *,
    num_classes: int | None = None,
    limit: int = DEFAULT_LIMIT,
    name: str = "local data",
) -> Dataset:
    """``data`` as a :class:`Dataset` of at most ``limit`` examples (see the module doc)."""
    if isinstance(data, Dataset):
        return data
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            raise DataError(
                f"{name}: a TensorDataset of {len(data.tensors)} tensors; expected two "
                "(inputs, labels)"
            )
        x, y = data.tensors
    elif isinstance(data, DataLoader):
        x, y = _gather(iter(data), limit, name, "batch")
    elif isinstance(data, TorchDataset) and hasattr(data, "__len__"):
        count = min(len(data), limit)
        x, y = _gather((_item(data, i, name) for i in range(count)), limit, name, "item")
    else:
        raise DataError(f"{name}: cannot use a {type(data).__name__}; expected {EXPECTED}")
    x, y = _tensor(x, name, "inputs"), _tensor(y, name, "labels")
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} inputs but {len(y)} labels")
    x, y = x[:limit], y[:limit]
    if not x.is_floating_point():
        raise DataError(f"{name}: inputs must be floating point, got {x.dtype}")
    if x.ndim == 3:  # N x H x W: one channel
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(
            f"{name}: inputs of shape {tuple(x.shape)}; gradguard's data checks take image "
            "batches N x C x H x W (or N x H x W). Without such data, configure only the "
            "data-free detectors (architecture, forensics)"
        )
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(
            f"{name}: labels must be integer class indices of shape (N,), got "
            f"{tuple(y.shape)} {y.dtype}"
        )
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{name}: negative class label {int(y.min())}")
    classes = int(y.max()) + 1 if len(y) else 0
    if num_classes is not None and classes > num_classes:
        raise DataError(f"{name}: label {classes - 1} but only {num_classes} classes")
    return Dataset(
        x.detach().float().contiguous(), y.contiguous(), num_classes or max(classes, 1), name
    )


def _item(data, i: int, name: str):
    try:
        return data[i]
    except Exception as e:  # noqa: BLE001 - the user's dataset: say which item failed
        raise DataError(f"{name}: item {i} cannot be read ({type(e).__name__}: {e})") from None


def _gather(items, limit: int, name: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(input, label)`` items or batches until ``limit`` examples are held."""
    xs, ys, held = [], [], 0
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(
                f"{name}: each {what} must be (input, label), got a {type(item).__name__}"
            )
        x, y = _tensor(item[0], name, "inputs"), _tensor(item[1], name, "labels")
        if what == "item":
            x, y = x[None], y.reshape(1)
        xs.append(x)
        ys.append(y)
        held += len(x)
        if held >= limit:
            break
    if not xs:
        raise DataError(f"{name}: the data set is empty")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as e:
        raise DataError(f"{name}: {what}s of different shapes ({e})") from None


def _tensor(value: Any, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return torch.as_tensor(np.asarray(value))
    raise DataError(
        f"{name}: {what} are a {type(value).__name__}, not tensors; expected {EXPECTED}"
    )
