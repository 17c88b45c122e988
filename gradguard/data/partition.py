"""Splitting a data set across clients: IID, Dirichlet label skew, label shards."""

from __future__ import annotations

import numpy as np

from gradguard.data.dataset import Dataset
from gradguard.errors import GradguardError


def partition(data: Dataset, num_clients: int, scheme: str = "iid", seed: int = 0) -> list[Dataset]:
    """Split ``data`` across ``num_clients``; ``scheme`` is ``iid``, ``dirichlet:ALPHA`` or
    ``shards:K`` (each client gets K label-sorted shards, McMahan et al. 2017).

    Deterministic under ``seed``; every client gets at least one example.
    """
    if num_clients < 1 or num_clients > len(data):
        raise GradguardError(f"cannot split {len(data)} examples across {num_clients} clients")
    rng = np.random.default_rng(seed)
    kind, _, arg = scheme.partition(":")
    labels = data.y.numpy()
    if kind == "iid":
        parts = np.array_split(rng.permutation(len(data)), num_clients)
    elif kind == "dirichlet":
        parts = _dirichlet(labels, num_clients, _number(scheme, arg, float), data.num_classes, rng)
    elif kind == "shards":
        parts = _shards(labels, num_clients, int(_number(scheme, arg, int)), rng)
    else:
        raise GradguardError(f"unknown partition {scheme!r}: use iid, dirichlet:ALPHA or shards:K")
    return [data.subset(np.sort(p), name=f"{data.name}[client {i}]") for i, p in enumerate(parts)]


def _number(scheme: str, arg: str, kind: type) -> float:
    try:
        value = kind(arg)
    except ValueError:
        raise GradguardError(f"partition {scheme!r}: {arg!r} is not a number") from None
    if value <= 0:
        raise GradguardError(f"partition {scheme!r}: the parameter must be positive")
    return value


def _dirichlet(
    labels: np.ndarray, n: int, alpha: float, classes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    parts: list[list[int]] = [[] for _ in range(n)]
    for c in range(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) == 0:
            continue
        share = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(chunk.tolist())
    # A client left empty takes one example from the largest client, so every client can train.
    for client in range(n):
        if not parts[client]:
            donor = max(range(n), key=lambda k: len(parts[k]))
            parts[client].append(parts[donor].pop())
    return [np.array(p, dtype=np.int64) for p in parts]


def _shards(
    labels: np.ndarray, n: int, per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    total = n * per_client
    if total > len(labels):
        raise GradguardError(
            f"shards:{per_client} needs {total} shards but there are only {len(labels)} examples"
        )
    shards = np.array_split(order, total)
    assignment = rng.permutation(total).reshape(n, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in assignment]
