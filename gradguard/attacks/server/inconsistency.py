"""Model inconsistency: eluding secure aggregation (Pasquini et al., CCS 2022, section 4).

The server sends different models to different clients in one round. The target receives a
model manipulated by an ``inner`` attack (default: the imprint of the first linear layer);
every other client receives the round's model with its last ``zeroed_layers`` weight layers
set to zero. With the last layer's weights zero, no gradient reaches any layer below it;
with the layer before it zero too, its activations are zero and so is the last layer's
weight gradient: a non-target's update is its output bias alone, in every local step. The
securely aggregated sum is then the target's own update on every other entry, and the
inner attack's decoder reads the target's images from the sum (the imprint decoder divides
gradient rows by bias entries, so the sum's weighting by example counts cancels).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.attacks import attack_class, get_attack
from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.update import Update


@dataclass(frozen=True)
class InconsistencySecrets:
    target: int
    inner: Any  # the inner attack's secrets


def zero_last_layers(model: nn.Module, layers: int) -> nn.Module:
    """``model`` with the weights and biases of its last ``layers`` linear/conv layers zero."""
    weighted = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if len(weighted) < layers:
        raise GradguardError(f"the model has {len(weighted)} weight layers, fewer than {layers}")
    with torch.no_grad():
        for m in weighted[len(weighted) - layers :]:
            m.weight.zero_()
            if m.bias is not None:
                m.bias.zero_()
    return model


class ModelInconsistency(ServerAttack):
    """The target (client id ``target``) gets ``inner``'s model, everyone else zeroed layers.

    ``bins`` and ``imprint_scale`` are handed to an inner attack that takes them (imprint),
    the client's ``batch_size`` to one that declares ``takes_batch_size`` (curious).
    """

    name = "inconsistency"
    per_client = True
    secure_sum = True
    takes_batch_size = True
    threat_model = ThreatModel(
        changes_architecture=False,
        protocols=("fedsgd", "fedavg"),
        aggregation="secure",
        summary="per-client models: the target gets the inner attack's model, the others "
        "zeroed last layers; the secure sum is the target's update",
    )

    def __init__(
        self,
        inner: str = "imprint",
        target: int = 0,
        zeroed_layers: int = 2,
        bins: int = 256,
        batch_size: int = 64,
        imprint_scale: float = 1.0,
    ) -> None:
        if inner == self.name:
            raise GradguardError("the inner attack of inconsistency cannot be inconsistency")
        if zeroed_layers < 1:
            raise GradguardError(f"zeroed_layers must be at least 1, got {zeroed_layers}")
        takes = inspect.signature(attack_class(inner)).parameters
        if imprint_scale != 1.0 and "imprint_scale" not in takes:
            raise GradguardError(f"inner attack {inner!r} has no imprint_scale")
        passed = {"bins": bins, "imprint_scale": imprint_scale}
        self.inner = get_attack(
            inner, batch_size=batch_size, **{k: v for k, v in passed.items() if k in takes}
        )
        if self.inner.per_client or self.inner.secure_sum:
            raise GradguardError(f"inner attack {inner!r} must be a one-model attack")
        self.target, self.zeroed_layers = int(target), int(zeroed_layers)
        self.models = self.inner.models

    def model_kwargs(self, model: str) -> dict[str, Any]:
        return self.inner.model_kwargs(model)

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, Any]:
        """The target's model (the inner attack's), for a single client."""
        manipulated, secrets = self.inner.manipulate(model, aux)
        return manipulated, InconsistencySecrets(self.target, secrets)

    def reconstruct(self, update: Update, secrets: InconsistencySecrets) -> Reconstruction:
        return self.inner.reconstruct(update, secrets.inner)

    def manipulate_clients(
        self, model: nn.Module, aux: Dataset, clients: list[int]
    ) -> tuple[dict[int, nn.Module], InconsistencySecrets]:
        if self.target not in clients:
            raise GradguardError(
                f"inconsistency targets client {self.target}, not among {sorted(clients)}"
            )
        manipulated, secrets = self.manipulate(copy.deepcopy(model), aux)
        zeroed = zero_last_layers(copy.deepcopy(model), self.zeroed_layers)
        a, b = manipulated.state_dict(), zeroed.state_dict()
        if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
            raise GradguardError(
                f"inner attack {self.inner.name!r} changes the architecture: the clients' "
                "models would not sum"
            )
        return {c: manipulated if c == self.target else zeroed for c in clients}, secrets

    def decoded_keys(self, secrets: InconsistencySecrets) -> tuple[str, ...]:
        """The parameters the inner decoder reads, where it names them (imprint)."""
        inner = secrets.inner
        if hasattr(inner, "weight_key") and hasattr(inner, "bias_key"):
            return (inner.weight_key, inner.bias_key)
        return ()

    def reconstruct_sum(
        self, aggregate: Update, clients: list[int], secrets: InconsistencySecrets
    ) -> dict[int, Reconstruction]:
        return {secrets.target: self.inner.reconstruct(aggregate, secrets.inner)}
