"""Honest global models from real FedAvg training, for false-positive measurements.

Each run trains one model family on one partition with :class:`gradguard.fl.Federation`
(an honest server) and snapshots the global model before round 1 (the initial model) and
after every round, so the corpus spans training from first round to convergence. Every
snapshot comes with what a client would hold when it arrives: its template (the
architecture), its local data, and the last global model it accepted.

Seeds stay in 0-999: the detectors' thresholds are calibrated on seeds >= 1000, so the
corpus measures them on models they were never fitted to (issue 4, "Thresholds").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from gradguard.data import Dataset, partition, train_test
from gradguard.errors import GradguardError
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
from gradguard.models import build_model

FAMILIES: tuple[tuple[str, str | None], ...] = (
    ("mlp", None),
    ("convnet", None),
    ("resnet", "batch"),
    ("resnet", "group"),
    ("vit-tiny", None),
)
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet:0.1")
MAX_SEED = 999  # seeds >= 1000 belong to threshold calibration


@dataclass(frozen=True)
class CorpusConfig:
    dataset: str = "digits"
    limit: int | None = None  # training examples kept (seeded subset)
    families: tuple[tuple[str, str | None], ...] = FAMILIES
    partitions: tuple[str, ...] = PARTITIONS
    seeds: tuple[int, ...] = (0,)
    rounds: int = 15
    clients: int = 5
    training: LocalTraining = field(
        default_factory=lambda: LocalTraining(epochs=1, batch_size=32, lr=0.1)
    )
    include_initial: bool = True
    every: int = 1  # snapshot rounds 1, every, 2 * every, ... and the last round

    def __post_init__(self) -> None:
        bad = [s for s in self.seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise GradguardError(
                f"corpus seeds must lie in 0-{MAX_SEED} (calibration uses >= 1000); got {bad}"
            )

    def snapshot_rounds(self) -> list[int]:
        rounds = {r for r in range(1, self.rounds + 1) if r == 1 or r % self.every == 0}
        rounds |= {self.rounds} | ({0} if self.include_initial else set())
        return sorted(rounds)

    @property
    def size(self) -> int:
        per_run = len(self.snapshot_rounds())
        return len(self.families) * len(self.partitions) * len(self.seeds) * per_run


@dataclass
class HonestModel:
    """One honest global model as a client receives it."""

    model: str
    norm: str | None
    partition: str
    seed: int
    round: int  # 0: the initial model, before any training
    accuracy: float
    state: dict[str, torch.Tensor]
    template: nn.Module
    data: Dataset  # the receiving client's local data
    client: int
    previous: dict[str, torch.Tensor] | None = None

    @property
    def family(self) -> str:
        return self.model + (f"-{self.norm}" if self.norm else "")

    @property
    def key(self) -> str:
        return f"{self.family}/{self.partition}/seed{self.seed}/round{self.round}"


def honest_models(cfg: CorpusConfig = CorpusConfig()) -> Iterator[HonestModel]:
    """Train every (family, partition, seed) run and yield its global model per round."""
    train, test = train_test(cfg.dataset, limit=cfg.limit, seed=0)
    for seed in cfg.seeds:
        for part in cfg.partitions:
            clients_data = partition(train, cfg.clients, part, seed=seed)
            for name, norm in cfg.families:
                yield from _run(cfg, name, norm, part, seed, clients_data, test)


def _run(
    cfg: CorpusConfig,
    name: str,
    norm: str | None,
    part: str,
    seed: int,
    clients_data: list[Dataset],
    test: Dataset,
) -> Iterator[HonestModel]:
    from gradguard.metrics import accuracy

    torch.manual_seed(seed)
    model = build_model(name, test.image_shape, test.num_classes, norm=norm)
    template = copy.deepcopy(model)
    clients = [Client(i, d, cfg.training) for i, d in enumerate(clients_data)]
    fed = Federation(
        model, clients, test, FederationConfig(rounds=cfg.rounds, training=cfg.training, seed=seed)
    )

    def snapshot(rnd: int, acc: float, previous: dict | None) -> HonestModel:
        client = rnd % cfg.clients  # the receiving client rotates: skewed ones included
        return HonestModel(
            name,
            norm,
            part,
            seed,
            rnd,
            acc,
            full_state(fed.model),
            template,
            clients_data[client],
            client,
            previous,
        )

    keep = set(cfg.snapshot_rounds())
    if cfg.include_initial:
        yield snapshot(0, accuracy(fed.model, test.x, test.y), None)
    previous = full_state(fed.model)
    for rnd in range(1, cfg.rounds + 1):
        result = fed.round(rnd)
        if rnd in keep:
            yield snapshot(rnd, result.accuracy, previous)
        # Every client takes part in every round: each last accepted the previous round's model.
        previous = full_state(fed.model)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every state entry (integer buffers too), as a server sends a global model."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
