"""The in-process federation: sample clients, send models, train, aggregate, evaluate.

A :class:`ServerHook` decides which model each client receives (an honest server sends the
global model; an attack sends a manipulated one) and sees what the server sees: the
individual updates, or only their sum under secure aggregation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.fl import secure
from gradguard.fl.aggregate import aggregate
from gradguard.fl.client import Client, LocalTraining
from gradguard.fl.dp import ClientDP, privatize
from gradguard.fl.update import Update, float_state, unflatten
from gradguard.metrics import accuracy


@dataclass(frozen=True)
class FederationConfig:
    rounds: int = 10
    clients_per_round: int | None = None  # None: every client, every round
    training: LocalTraining = LocalTraining()
    aggregator: str = "mean"
    byzantine: int = 0  # clients the robust aggregators should tolerate
    secure_aggregation: bool = False
    dp: ClientDP | None = None
    server_lr: float = 1.0
    seed: int = 0


@dataclass
class RoundResult:
    round: int
    accuracy: float
    seconds: float
    train_seconds: float
    aggregate_seconds: float
    participants: list[int]
    abstained: list[int] = field(default_factory=list)

    @property
    def overhead_seconds(self) -> float:
        """Time spent outside local training and aggregation math."""
        return self.seconds - self.train_seconds - self.aggregate_seconds


class ServerHook:
    """An honest server. Subclass to send manipulated models and read the updates."""

    def model_for(self, rnd: int, client_id: int, global_model: nn.Module) -> nn.Module:
        return global_model

    def observe(self, rnd: int, updates: list[Update] | None,
                aggregate_delta: dict[str, torch.Tensor] | None) -> None:
        """``updates`` is None under secure aggregation: the server sees only the sum."""


class Federation:
    """N clients around one global model."""

    def __init__(self, model: nn.Module, clients: list[Client], test: Dataset,
                 config: FederationConfig, hook: ServerHook | None = None) -> None:
        self.model = model
        self.clients = clients
        self.test = test
        self.config = config
        self.hook = hook or ServerHook()
        self.history: list[RoundResult] = []
        self._gen = torch.Generator().manual_seed(config.seed)

    def run(self, progress: bool = True,
            on_round: Callable[[RoundResult], None] | None = None) -> list[RoundResult]:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        cols = (TextColumn("[bold]FL rounds"), BarColumn(), TextColumn("{task.completed}/"
                "{task.total}"), TextColumn("acc {task.fields[acc]:.3f}"), TimeElapsedColumn())
        with Progress(*cols, disable=not progress, transient=True) as bar:
            task = bar.add_task("rounds", total=self.config.rounds, acc=0.0)
            for rnd in range(1, self.config.rounds + 1):
                result = self.round(rnd)
                bar.update(task, advance=1, acc=result.accuracy)
                if on_round:
                    on_round(result)
        return self.history

    def _sample(self) -> list[Client]:
        k = self.config.clients_per_round
        if k is None or k >= len(self.clients):
            return list(self.clients)
        idx = torch.randperm(len(self.clients), generator=self._gen)[:k]
        return [self.clients[i] for i in sorted(idx.tolist())]

    def round(self, rnd: int) -> RoundResult:
        start = time.perf_counter()
        train_s = agg_s = 0.0
        updates, abstained = [], []
        for client in self._sample():
            sent = self.hook.model_for(rnd, client.client_id, self.model)
            t0 = time.perf_counter()
            update = client.train(sent, self._gen)
            if update is not None and self.config.dp is not None:
                update = privatize(update, self.config.dp, self._gen)
            train_s += time.perf_counter() - t0
            if update is None:
                abstained.append(client.client_id)
            else:
                updates.append(update)
        delta = None
        if updates:
            t0 = time.perf_counter()
            delta = self._aggregate(updates)
            agg_s = time.perf_counter() - t0
            self._apply(delta)
        self.hook.observe(rnd, None if self.config.secure_aggregation else updates, delta)
        acc = accuracy(self.model, self.test.x, self.test.y)
        result = RoundResult(rnd, acc, time.perf_counter() - start, train_s, agg_s,
                             [u.client_id for u in updates], abstained)
        self.history.append(result)
        return result

    def _aggregate(self, updates: list[Update]) -> dict[str, torch.Tensor]:
        like = updates[0].as_delta()
        weights = torch.tensor([float(u.num_examples) for u in updates])
        vectors = torch.stack([u.flat() for u in updates])
        if self.config.secure_aggregation:
            ids = [u.client_id for u in updates]
            weighted = [w * v for w, v in zip(weights, vectors, strict=True)]
            flat = secure.secure_sum(weighted, ids, self.config.seed) / weights.sum()
        else:
            flat = aggregate(self.config.aggregator, vectors, weights, self.config.byzantine)
        return unflatten(flat, like)

    def _apply(self, delta: dict[str, torch.Tensor]) -> None:
        state = self.model.state_dict()
        for k, d in delta.items():
            state[k] = state[k] + self.config.server_lr * d.to(state[k].dtype)
        self.model.load_state_dict(state)


def global_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return float_state(model)
