"""The malicious-server attack contract (design: ServerAttack), declared, not discovered.

An attack subclasses :class:`ServerAttack` and declares what it needs as class attributes
(the defaults fit most attacks):

- ``models``: the zoo models it applies to (None: any), and ``model_kwargs(model)`` the
  build options it needs (a layer width);
- ``takes_batch_size``: its constructor takes the client's batch size (``batch_size``);
- ``per_client``: it sends each client its own model (:meth:`manipulate_clients`);
- ``secure_sum``: it reconstructs from the securely aggregated sum of the round
  (:meth:`reconstruct_sum`), not from one client's update; :meth:`decoded_keys` names the
  parameters its decoder reads, where it can (a SecAgg+ server sizes its clipping to them).

``manipulate(model, aux) -> (model, secrets)`` builds the tampered global model from the
honest one and the server's auxiliary data; ``reconstruct(update, secrets)`` turns what the
server receives back into images. Options are constructor arguments, given as ``KEY=VALUE``
text (:func:`gradguard.options.parse_pairs`) and checked against the constructor
(:func:`check_options`).
An attack is real only if its reconstruction is scored against the client's true batch
(:func:`gradguard.metrics.match`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.errors import GradguardError
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


class ServerAttack:
    """Base of every malicious-server attack; subclasses set ``name`` and ``threat_model``."""

    name: ClassVar[str] = ""
    threat_model: ClassVar[ThreatModel]
    models: ClassVar[tuple[str, ...] | None] = None
    takes_batch_size: ClassVar[bool] = False
    per_client: ClassVar[bool] = False
    secure_sum: ClassVar[bool] = False

    def model_kwargs(self, model: str) -> dict[str, Any]:
        """Build options of the zoo model ``model`` this attack needs (default: none)."""
        return {}

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, Any]:
        raise NotImplementedError

    def reconstruct(self, update: Update, secrets: Any) -> Reconstruction:
        raise NotImplementedError

    def manipulate_clients(
        self, model: nn.Module, aux: Dataset, clients: list[int]
    ) -> tuple[dict[int, nn.Module], Any]:
        """The model each client in ``clients`` receives, and the secrets; default: every
        client the same manipulated model."""
        manipulated, secrets = self.manipulate(model, aux)
        return {c: manipulated for c in clients}, secrets

    def reconstruct_sum(
        self, aggregate: Update, clients: list[int], secrets: Any
    ) -> dict[int, Reconstruction]:
        """Per client, what the server recovers from the round's secure aggregate."""
        raise NotImplementedError(f"attack {self.name!r} does not read a secure aggregate")

    def decoded_keys(self, secrets: Any) -> tuple[str, ...]:
        """The parameters the decoder reads; () when it names none (it may read any)."""
        return ()


def check_options(name: str, klass: type, options: Mapping[str, Any]) -> None:
    """Each option must be a constructor argument of ``klass`` and have its default's type
    (bool, int, float or str; a number finite). Raises :class:`GradguardError`."""
    params = inspect.signature(klass).parameters
    for key, value in options.items():
        if key not in params:
            valid = ", ".join(p for p in params if p != "self") or "none"
            raise GradguardError(f"attack {name!r} has no option {key!r}; valid: {valid}")
        default = params[key].default
        kind = type(default)
        if default is None or default is inspect.Parameter.empty:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = {
            bool: isinstance(value, bool),
            int: number and isinstance(value, int),
            float: number,
            str: isinstance(value, str),
        }.get(kind, True)
        if not ok:
            raise GradguardError(
                f"option {key}={value!r}: expected {kind.__name__} (default {default!r})"
            )
        if kind in (int, float) and not math.isfinite(value):
            raise GradguardError(f"option {key}={value!r}: expected a finite number")
