"""The malicious-server attack contract (design: ServerAttack).

``manipulate(model, aux) -> (model, secrets)`` builds the tampered global model from the
honest one and the server's auxiliary data; ``reconstruct(update, secrets)`` turns what the
server receives back into images. An attack is real only if its reconstruction is scored
against the client's true batch (:func:`gradguard.metrics.match`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.fl.update import Update


@dataclass(frozen=True)
class ThreatModel:
    """What an attack needs and works under."""

    changes_architecture: bool
    protocols: tuple[Literal["fedsgd", "fedavg"], ...]
    aggregation: Literal["single", "secure"] = "single"
    summary: str = ""


@dataclass
class Reconstruction:
    """Recovered images (N x C x H x W in [0, 1]), optionally labels, and attack notes."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


class ServerAttack(Protocol):
    name: str
    threat_model: ThreatModel

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, Any]: ...

    def reconstruct(self, update: Update, secrets: Any) -> Reconstruction: ...
