"""The in-process federation: sample clients, send models, train, aggregate, evaluate.

A :class:`ServerHook` decides which model each client receives (an honest server sends the
global model; an attack sends a manipulated one) and sees what the server sees: the
individual updates, or only their sum under secure aggregation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.aggregate import AGGREGATORS, aggregate, finite_rows
from gradguard.fl.client import Client, LocalTraining
from gradguard.fl.dp import ClientDP
from gradguard.fl.secure import secure_sum
from gradguard.fl.update import Update, float_state, unflatten
from gradguard.metrics import accuracy

log = logging.getLogger("gradguard.fl")


@dataclass(frozen=True)
class FederationConfig:
    """One federation's rounds, sampling, local training, aggregation and privacy.

    ``byzantine`` is the number of malicious clients the robust aggregators should tolerate
    (Krum's ``f``, the trimmed mean's cut per side). Secure aggregation admits only the
    weighted mean: the server never sees an individual update to rank or trim.
    """

    rounds: int = 10
    clients_per_round: int | None = None  # None: every client, every round
    training: LocalTraining = LocalTraining()
    aggregator: str = "mean"
    byzantine: int = 0
    secure_aggregation: bool = False
    dp: ClientDP | None = None
    server_lr: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise GradguardError(f"need at least one round (got {self.rounds})")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise GradguardError(f"clients per round must be >= 1 (got {self.clients_per_round})")
        if self.aggregator not in AGGREGATORS:
            raise GradguardError(
                f"unknown aggregator {self.aggregator!r}; valid: {', '.join(AGGREGATORS)}"
            )
        if self.byzantine < 0:
            raise GradguardError(f"byzantine must be >= 0 (got {self.byzantine})")
        if self.secure_aggregation and self.aggregator != "mean":
            raise GradguardError(
                f"secure aggregation reveals only the sum, so it admits only "
                f"the mean aggregator (got {self.aggregator!r})"
            )
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise GradguardError(f"server lr must be finite and > 0 (got {self.server_lr})")
        if self.dp is not None and not isinstance(self.dp, ClientDP):
            raise GradguardError(f"dp must be a ClientDP, got {type(self.dp).__name__}")


@dataclass
class RoundResult:
    """One round's outcome and where its wall time went (seconds)."""

    round: int
    accuracy: float
    seconds: float
    train_seconds: float  # local training (and client-side DP / poison) of every client
    aggregate_seconds: float  # aggregation math (masking and unmasking too, if secure)
    participants: list[int]
    abstained: list[int] = field(default_factory=list)
    eval_seconds: float = 0.0  # evaluating the new global model on the test set
    guard_seconds: float = 0.0  # clients' guards (part of the overhead)

    @property
    def overhead_seconds(self) -> float:
        """The simulation's own cost: time outside local training, aggregation math and
        test-set evaluation (sampling, dispatching models, hooks, guards, applying the
        aggregate, bookkeeping)."""
        return max(
            0.0, self.seconds - self.train_seconds - self.aggregate_seconds - self.eval_seconds
        )

    def as_dict(self) -> dict:
        return {
            "round": self.round,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
            "train_seconds": self.train_seconds,
            "aggregate_seconds": self.aggregate_seconds,
            "overhead_seconds": self.overhead_seconds,
            "eval_seconds": self.eval_seconds,
            "guard_seconds": self.guard_seconds,
            "participants": self.participants,
            "abstained": self.abstained,
        }


class ServerHook:
    """An honest server. Subclass to send manipulated models and read the updates."""

    def model_for(self, rnd: int, client_id: int, global_model: nn.Module) -> nn.Module:
        return global_model

    def observe(
        self,
        rnd: int,
        updates: list[Update] | None,
        aggregate_delta: dict[str, torch.Tensor] | None,
    ) -> None:
        """``updates`` is None under secure aggregation: the server sees only the sum.
        ``aggregate_delta`` is None when every sampled client abstained."""


class Federation:
    """N clients around one global model."""

    def __init__(
        self,
        model: nn.Module,
        clients: list[Client],
        test: Dataset,
        config: FederationConfig,
        hook: ServerHook | None = None,
    ) -> None:
        if not clients:
            raise GradguardError("a federation needs at least one client")
        ids = [c.client_id for c in clients]
        if len(set(ids)) != len(ids):
            raise GradguardError("client ids must be distinct")
        self.model = model
        self.clients = clients
        self.test = test
        self.config = config
        self.hook = hook or ServerHook()
        self.history: list[RoundResult] = []
        self._gen = torch.Generator().manual_seed(config.seed)
        self._keys = list(float_state(model))

    def run(
        self, progress: bool = True, on_round: Callable[[RoundResult], None] | None = None
    ) -> list[RoundResult]:
        """Run every round; a transient progress bar goes to stderr."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        cols = (
            TextColumn("[bold]FL rounds"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("acc {task.fields[acc]:.3f}"),
            TimeElapsedColumn(),
        )
        with Progress(
            *cols, console=Console(stderr=True), disable=not progress, transient=True
        ) as bar:
            task = bar.add_task("rounds", total=self.config.rounds, acc=0.0)
            for rnd in range(len(self.history) + 1, self.config.rounds + 1):
                result = self.round(rnd)
                bar.update(task, advance=1, acc=result.accuracy)
                if on_round:
                    on_round(result)
        return self.history

    def sample(self) -> list[Client]:
        """This round's participants: ``clients_per_round`` drawn without replacement."""
        k = self.config.clients_per_round
        if k is None or k >= len(self.clients):
            return list(self.clients)
        idx = torch.randperm(len(self.clients), generator=self._gen)[:k]
        return [self.clients[i] for i in sorted(idx.tolist())]

    def round(self, rnd: int) -> RoundResult:
        start = time.perf_counter()
        train_s = agg_s = guard_s = 0.0
        updates, abstained = [], []
        for client in self.sample():
            sent = self.hook.model_for(rnd, client.client_id, self.model)
            t0 = time.perf_counter()
            ok = client.accepts(sent)
            t1 = time.perf_counter()
            guard_s += t1 - t0
            if not ok:
                abstained.append(client.client_id)
                cover = None
                if self.config.secure_aggregation:
                    cover = client.cover(sent, self._gen)
                if cover is not None:  # it refused, but the secure sum keeps its share
                    updates.append(cover)
                continue
            updates.append(client.fit(sent, self._gen, self.config.dp))
            train_s += time.perf_counter() - t1
        delta = None
        if updates:
            t0 = time.perf_counter()
            delta = self.aggregate(updates)
            agg_s = time.perf_counter() - t0
            self._apply(delta)
        self.hook.observe(rnd, None if self.config.secure_aggregation else updates, delta)
        t0 = time.perf_counter()
        acc = accuracy(self.model, self.test.x, self.test.y)
        eval_s = time.perf_counter() - t0
        result = RoundResult(
            rnd,
            acc,
            time.perf_counter() - start,
            train_s,
            agg_s,
            [u.client_id for u in updates],
            abstained,
            eval_s,
            guard_s,
        )
        self.history.append(result)
        return result

    def aggregate(self, updates: list[Update]) -> dict[str, torch.Tensor]:
        """The aggregate delta of ``updates`` under this federation's rule."""
        like = {k: v for k, v in float_state(self.model).items()}
        for u in updates:
            delta = u.as_delta()
            bad = [k for k in self._keys if k not in delta or delta[k].shape != like[k].shape]
            if bad or len(delta) != len(self._keys):
                raise GradguardError(
                    f"client {u.client_id}: update does not match the global "
                    f"model's state ({(bad or sorted(delta))[0]!r})"
                )
        weights = torch.tensor([float(u.num_examples) for u in updates], dtype=torch.float64)
        vectors = [u.flat(self._keys) for u in updates]
        # non-finite updates are rejected (logged) before any rule ranks, trims or sums them
        ok = finite_rows(torch.stack(vectors), [u.client_id for u in updates]).tolist()
        if not any(ok):
            raise GradguardError("every update of the round holds non-finite values")
        updates = [u for u, k in zip(updates, ok, strict=True) if k]
        vectors = [v for v, k in zip(vectors, ok, strict=True) if k]
        weights = weights[torch.tensor(ok)]
        if self.config.secure_aggregation:
            ids = [u.client_id for u in updates]
            weighted = [(w * v.double()) for w, v in zip(weights, vectors, strict=True)]
            flat = (secure_sum(weighted, ids, self.config.seed).double() / weights.sum()).float()
        else:
            flat = aggregate(
                self.config.aggregator, torch.stack(vectors), weights.float(), self.config.byzantine
            )
        return unflatten(flat, like)

    def _apply(self, delta: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            state = self.model.state_dict()
            for k, d in delta.items():
                state[k].add_(d.to(state[k].dtype), alpha=self.config.server_lr)
