"""Threshold calibration on honest models only (issue 4, item 4).

A calibration corpus of honest global models comes from short FedAvg runs on digits
(``mlp``, ``convnet``, ``resnet`` with batch and group norm, ``vit-tiny``; IID and
Dirichlet 0.1; seeds from 1000, disjoint from the evaluation corpus's 0-999). Every
round's global model, the initial one included, is scored by every detector on the data
of one client (rotating), as a guard on that client would see it. For each threshold key
the proposal is ``max(floor, MARGIN x largest honest score)``: ``floor`` is the literature
anchor (transmit-SNR and D-SNR: 1) or the smallest structural count that means anything.
No attack is ever scored here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from gradguard.data import Dataset, partition, train_test
from gradguard.detect.base import Context, Verdict
from gradguard.detect.thresholds import DEFAULTS
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
from gradguard.models import build_model

MARGIN = 2.0

# finding check -> threshold key whose honest maximum it measures
CHECK_TO_KEY = {
    "architecture.magnitude": "architecture.max_abs",
    "transmit-snr": "transmit-snr.ratio",
    "forensics.imprint": "forensics.duplicate_rows",
    "forensics.trap": "forensics.trap_signs",
    "forensics.dirac": "forensics.dirac_filters",
    "forensics.zero-rows": "forensics.zero_rows",
    "forensics.bias": "forensics.bias_extremity",
    "forensics.attention": "forensics.attention",
    "dsnr": "dsnr.ratio",
    "warmup.z": "warmup.z",
    "warmup+.z": "warmup+.z",
    "warmup-paper.z": "warmup-paper.z",
    "exposure.isolated": "exposure.exposed_fraction",
    "exposure.pairs": "exposure.pair_fraction",
    "exposure.silencing": "exposure.silencing",
    "exposure.rise": "exposure.rise",
    "exposure.head": "exposure.head_collapse",
}

# the smallest sensible threshold of each key (anchor or structural minimum)
FLOORS = {
    "architecture.max_abs": 1e6,
    "transmit-snr.ratio": 1.0,
    "forensics.duplicate_rows": 3.0,
    "forensics.trap_signs": 12.0,
    "forensics.dirac_filters": 1.0,
    "forensics.zero_rows": 1.0,
    "forensics.bias_extremity": 10.0,
    "forensics.attention": 1.0,
    "dsnr.ratio": 1.0,
    "warmup.z": 0.0,
    "warmup+.z": 0.0,
    "warmup-paper.z": 0.0,
    "exposure.exposed_fraction": 0.4,
    "exposure.pair_fraction": 0.05,  # 3 of 64 samples
    "exposure.silencing": 2.0,
    "exposure.rise": 0.1,
    "exposure.head_collapse": 0.3,
}
# keys whose honest maximum sits close to what attacks reach get a smaller margin
MARGINS = {"exposure.exposed_fraction": 1.2}

MODELS = (
    ("mlp", None),
    ("convnet", None),
    ("resnet", "batch"),
    ("resnet", "group"),
    ("vit-tiny", None),
)
PARTITIONS = ("iid", "dirichlet:0.1")


@dataclass(frozen=True)
class CorpusSpec:
    models: tuple[tuple[str, str | None], ...] = MODELS
    partitions: tuple[str, ...] = PARTITIONS
    seeds: tuple[int, ...] = (1000,)
    rounds: int = 6
    clients: int = 5
    limit: int = 1500  # digits training examples shared by the clients
    training: LocalTraining = field(default_factory=lambda: LocalTraining(epochs=1, lr=0.05))


@dataclass
class HonestModel:
    model: str
    norm: str | None
    partition: str
    seed: int
    round: int
    accuracy: float
    state: dict[str, torch.Tensor]
    template: torch.nn.Module
    data: Dataset  # the checking client's local data
    previous: dict[str, torch.Tensor] | None


def honest_corpus(spec: CorpusSpec) -> Iterator[HonestModel]:
    """Every round's honest global model of every run (round 0 = the initial model)."""
    for seed in spec.seeds:
        for name, norm in spec.models:
            for scheme in spec.partitions:
                train, test = train_test("digits", limit=spec.limit, seed=seed)
                torch.manual_seed(seed)
                model = build_model(name, train.image_shape, train.num_classes, norm=norm)
                parts = partition(train, spec.clients, scheme, seed=seed)
                clients = [Client(i, p, spec.training) for i, p in enumerate(parts)]
                fed = Federation(
                    model,
                    clients,
                    test,
                    FederationConfig(rounds=spec.rounds, training=spec.training, seed=seed),
                )
                prev = None
                for rnd in range(spec.rounds + 1):
                    acc = fed.round(rnd).accuracy if rnd else float("nan")
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    data = parts[rnd % spec.clients]
                    yield HonestModel(
                        name,
                        norm,
                        scheme,
                        seed,
                        rnd,
                        acc,
                        state,
                        build_model(name, train.image_shape, train.num_classes, norm=norm),
                        data,
                        prev,
                    )
                    prev = state


def raw_scores(verdict: Verdict) -> dict[str, float]:
    """Largest measured value per threshold key in a detector's verdict."""
    out: dict[str, float] = {}
    for f in verdict.findings:
        key = CHECK_TO_KEY.get(f.check)
        if key is not None and not math.isnan(f.value):
            out[key] = max(out.get(key, -math.inf), f.value)
    return out


def score_model(
    m: HonestModel, detectors: list, on_each: Callable | None = None
) -> dict[str, float]:
    ctx = Context(m.template, m.data, m.previous)
    scores: dict[str, float] = {}
    for det in detectors:
        v = det.inspect(m.state, ctx)
        scores.update(raw_scores(v))
        if on_each:
            on_each(det.name, v)
    return scores


def propose(maxima: dict[str, float]) -> dict[str, float]:
    """``max(floor, MARGIN x honest max)`` per key (keys never measured keep the default)."""
    out = {}
    for key, default in DEFAULTS.items():
        if key in maxima:
            out[key] = max(FLOORS.get(key, 0.0), MARGINS.get(key, MARGIN) * maxima[key])
        else:
            out[key] = default
    return out
