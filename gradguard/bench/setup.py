"""What a scenario builds: the initial model, the clients' data, the server's, the attack
and each client's Guard (deterministic under the scenario's seed, so every engine and every
Flower node rebuilds the same federation)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.attacks import ServerAttack, attack_class, get_attack, with_clients
from gradguard.bench.campaign import Campaign
from gradguard.bench.scenario import Scenario
from gradguard.data import Dataset, partition, train_test
from gradguard.detect import Guard, GuardConfig
from gradguard.errors import GradguardError
from gradguard.models import build_model


@dataclass
class Setup:
    """The initial model, the clients' partitions, the test split, the server's aux data."""

    model: nn.Module
    parts: list[Dataset]
    test: Dataset
    aux: Dataset


def build(sc: Scenario) -> Setup:
    """Deterministic under ``sc.seed``: every engine (and every Flower node) rebuilds the
    same model and the same partitions."""
    train, test = train_test(sc.dataset, limit=sc.train_limit, seed=sc.seed)
    if sc.aux_size >= len(train):
        raise GradguardError(f"aux_size {sc.aux_size} leaves no data for the clients")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(sc.seed + 17))
    aux = train.subset(order[: sc.aux_size], name=f"{train.name}[server aux]")
    rest = train.subset(order[sc.aux_size :])
    parts = partition(rest, sc.clients, sc.partition, seed=sc.seed)
    # a per-client attack (LOKI: a channel block per client) needs its architecture from
    # the first round on, so the federation is built in it
    kwargs = make_attack(sc).model_kwargs(sc.model) if attack_class(sc.attack).per_client else {}
    torch.manual_seed(sc.seed)
    model = build_model(sc.model, train.image_shape, train.num_classes, norm=sc.norm, **kwargs)
    return Setup(model, parts, test, aux)


def make_attack(sc: Scenario) -> ServerAttack:
    """The scenario's attack; one with a block per client (LOKI) is sized for its clients."""
    options = with_clients(sc.attack, dict(sc.attack_options), sc.clients)
    return get_attack(sc.attack, batch_size=sc.batch_size, **options)


def make_campaign(sc: Scenario, setup: Setup) -> Campaign:
    """The scenario's malicious server: its attack, rounds and targets, scored against the
    clients' true images."""
    return Campaign(
        make_attack(sc),
        sc.attack_rounds,
        sc.targets,
        setup.aux,
        truth={i: p.x for i, p in enumerate(setup.parts)},
        threshold_db=sc.threshold_db,
    )


def guard_settings(sc: Scenario) -> dict[str, Any]:
    """The scenario's GuardConfig keyword arguments (the clients' own settings)."""
    kw: dict[str, Any] = {
        "policy": sc.guard_policy,
        "thresholds": dict(sc.guard_thresholds),
        "stop_at_first": sc.guard_stop_at_first,
    }
    if sc.guard_detectors:
        kw["detectors"] = tuple(sc.guard_detectors)
    return kw


def make_guard(sc: Scenario, template: nn.Module, data: Dataset) -> Guard:
    """The client's Guard, configured from the scenario; ``data`` is the client's own."""
    return Guard(GuardConfig(**guard_settings(sc)), template=template, data=data)


def guarded_clients(spec: bool | str | Iterable[int], clients: int) -> set[int]:
    """Which clients run the guard: True/"all", False/"none", or ids ("0,2")."""
    if spec is True or spec == "all":
        return set(range(clients))
    if spec is False or spec in ("none", ""):
        return set()
    if isinstance(spec, str):
        return {int(x) for x in spec.split(",") if x.strip()}
    return set(spec)
