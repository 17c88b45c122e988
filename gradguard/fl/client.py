"""Local training on a client: FedSGD (one gradient) or FedAvg (E epochs of SGD)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradguard.data import Dataset
from gradguard.fl.update import Update, float_state


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains in a round.

    ``fedsgd``: one gradient on one batch of ``batch_size`` (no step is taken).
    Otherwise FedAvg: ``epochs`` passes of SGD, or exactly ``steps`` steps when given.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    steps: int | None = None
    fedsgd: bool = False


def local_update(model: nn.Module, data: Dataset, cfg: LocalTraining,
                 generator: torch.Generator | None = None, client_id: int = -1) -> Update:
    """Train a private copy of ``model`` on ``data``; the received model is left untouched."""
    net = copy.deepcopy(model)
    net.train()
    before = float_state(net)
    g = generator or torch.Generator().manual_seed(0)
    if cfg.fedsgd:
        idx = torch.randperm(len(data), generator=g)[:cfg.batch_size]
        net.zero_grad()
        loss = F.cross_entropy(net(data.x[idx]), data.y[idx])
        loss.backward()
        grads = {k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                 for k, p in net.named_parameters()}
        # Buffers (batch-norm running statistics) move in the forward pass; send their change.
        state = float_state(net)
        values = {k: grads[k] if k in grads else state[k] - before[k] for k in before}
        return Update(values, len(idx), 1, cfg.lr, "gradient", client_id,
                      {"loss": float(loss)})
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    steps, seen, total_loss = 0, 0, 0.0
    max_steps = cfg.steps if cfg.steps is not None else None
    epochs = cfg.epochs if max_steps is None else 10**9
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), cfg.batch_size):
            if max_steps is not None and steps >= max_steps:
                break
            idx = order[i:i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(data.x[idx]), data.y[idx])
            loss.backward()
            opt.step()
            steps, seen, total_loss = steps + 1, seen + len(idx), total_loss + loss.item()
        if max_steps is not None and steps >= max_steps:
            break
    after = float_state(net)
    values = {k: after[k] - before[k] for k in before}
    return Update(values, len(data) if max_steps is None else seen, steps, cfg.lr, "delta",
                  client_id, {"loss": total_loss / max(1, steps)})


Guard = Callable[[nn.Module], bool]


@dataclass
class Client:
    """A client: its private data, how it trains, and an optional guard.

    ``guard(model) -> bool`` returns True when the received model may be trained on;
    a client whose guard refuses abstains (``train`` returns None).
    """

    client_id: int
    data: Dataset
    training: LocalTraining
    guard: Guard | None = None

    def train(self, model: nn.Module, generator: torch.Generator) -> Update | None:
        if self.guard is not None and not self.guard(model):
            return None
        return local_update(model, self.data, self.training, generator, self.client_id)
