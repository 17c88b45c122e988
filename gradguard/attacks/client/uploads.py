"""What a maliciously curious client uploads (seed 001, Yue et al. sec. 3: Byzantine outside).

``honest``: its real (possibly DP-noised) FedAvg delta, indistinguishable from a peer's.
``flip``: minus its delta, same norm: it passes an update-norm check but points away from
the honest updates, so Krum and Multi-Krum drop it and the median moves to peers' values.
``outlier``: minus ten times its delta (the scaled sign flip of :mod:`gradguard.fl.byzantine`):
every robust rule drops it; the aggregate is then made of peers' updates only.

The client always knows exactly what it sent, so under any rule that includes it, it can
subtract its own share from the global change.
"""

from __future__ import annotations

from gradguard.errors import GradguardError
from gradguard.fl.byzantine import SignFlip
from gradguard.fl.update import Update

UPLOADS = ("honest", "flip", "outlier")
OUTLIER_SCALE = 10.0


def craft_upload(kind: str, honest: Update) -> Update:
    """The update to send instead of ``honest`` under strategy ``kind``."""
    if kind == "honest":
        return honest
    if kind == "flip":
        return SignFlip(1.0)(honest)
    if kind == "outlier":
        return SignFlip(OUTLIER_SCALE)(honest)
    raise GradguardError(f"unknown upload {kind!r}; valid: {', '.join(UPLOADS)}")
