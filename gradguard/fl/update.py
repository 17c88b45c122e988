"""What a client sends back: a gradient (FedSGD) or a parameter delta (FedAvg)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn


@dataclass
class Update:
    """A client's contribution to one round.

    ``values`` maps every floating-point state entry (parameters and float buffers) to the
    gradient (``kind="gradient"``, FedSGD: one batch, one step) or to ``new - old`` after
    ``local_steps`` SGD steps at ``lr`` (``kind="delta"``, FedAvg).
    """

    values: dict[str, torch.Tensor]
    num_examples: int
    local_steps: int
    lr: float
    kind: Literal["gradient", "delta"] = "delta"
    client_id: int = -1
    metrics: dict[str, float] = field(default_factory=dict)

    def as_delta(self) -> dict[str, torch.Tensor]:
        """The parameter change this update asks for (a gradient becomes ``-lr * g``)."""
        if self.kind == "delta":
            return self.values
        return {k: -self.lr * v for k, v in self.values.items()}

    def as_gradient(self) -> dict[str, torch.Tensor]:
        """Sum of the step gradients (``-delta / lr``); the gradient itself for FedSGD."""
        if self.kind == "gradient":
            return self.values
        return {k: -v / self.lr for k, v in self.values.items()}

    def flat(self) -> torch.Tensor:
        return torch.cat([v.flatten() for v in self.as_delta().values()])


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a model's floating-point state entries."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if v.is_floating_point()}


def unflatten(vector: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i:i + v.numel()].view_as(v)
        i += v.numel()
    return out
