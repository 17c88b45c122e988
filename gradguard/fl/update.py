"""What a client sends back: a gradient (FedSGD) or a parameter delta (FedAvg)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn


@dataclass
class Update:
    """A client's contribution to one round.

    ``kind="delta"`` (FedAvg): ``values`` maps every floating-point state entry (parameters
    and float buffers such as batch-norm running statistics) to ``new - old`` after
    ``local_steps`` SGD steps at ``lr``.

    ``kind="gradient"`` (FedSGD: one batch, no step): ``values`` maps every parameter to its
    gradient, and ``buffers`` maps every float buffer to its change in the forward pass (a
    buffer has no gradient). :meth:`as_delta` is ``-lr * gradient`` plus those changes.
    """

    values: dict[str, torch.Tensor]
    num_examples: int
    local_steps: int
    lr: float
    kind: Literal["gradient", "delta"] = "delta"
    client_id: int = -1
    metrics: dict[str, float] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_delta(self) -> dict[str, torch.Tensor]:
        """The change of the model's float state this update asks for."""
        if self.kind == "delta":
            return self.values
        return {**{k: -self.lr * v for k, v in self.values.items()}, **self.buffers}

    def as_gradient(self) -> dict[str, torch.Tensor]:
        """The parameter gradient for FedSGD; for FedAvg ``-delta / lr``, the sum of the
        step gradients (exact for plain SGD without momentum)."""
        if self.kind == "gradient":
            return self.values
        if self.lr == 0:
            raise ValueError("an update with lr = 0 has no gradient equivalent")
        return {k: -v / self.lr for k, v in self.values.items()}

    def flat(self, keys: list[str] | None = None) -> torch.Tensor:
        """The delta as one vector, in the order of ``keys`` (default: its own order)."""
        delta = self.as_delta()
        return torch.cat([delta[k].flatten().float() for k in (keys or list(delta))])

    def cosine(self, other: Update, keys: list[str] | None = None) -> float:
        """Cosine between this delta and ``other``'s over ``keys`` (default: this update's
        entries), computed in float64."""
        keys = keys or list(self.as_delta())
        a, b = self.flat(keys).double(), other.flat(keys).double()
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a model's floating-point state entries."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def unflatten(vector: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split ``vector`` into tensors shaped like ``like``'s values, in its key order."""
    total = sum(v.numel() for v in like.values())
    if vector.numel() != total:
        raise ValueError(f"vector of {vector.numel()} values for {total} state entries")
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out
