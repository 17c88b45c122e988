"""One federation whose server turns malicious in chosen rounds, run on any engine.

A :class:`Scenario` fixes everything a run needs (data, model, clients, rounds, local
training, the attack and when it strikes, the guard) as plain values, so the same federation
runs in-process (:func:`run_inprocess`) and in Flower (it travels as a Flower run config,
:meth:`Scenario.to_run_config`). Runs return a :class:`RunResult`: per round, who was
attacked, who abstained, how many images leaked, the guard's verdicts and the accuracy.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from gradguard.data import Dataset, partition, train_test
from gradguard.errors import GradguardError
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining, ServerHook
from gradguard.models import build_model


@dataclass(frozen=True)
class Scenario:
    """A federation and the attack campaign against it."""

    dataset: str = "digits"
    model: str = "mlp"
    norm: str | None = None
    clients: int = 4
    rounds: int = 10
    partition: str = "iid"
    train_limit: int | None = None
    aux_size: int = 128  # training images held back as the server's auxiliary data
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.3
    steps: int | None = None
    attack: str = "imprint"
    attack_options: tuple[tuple[str, Any], ...] = ()
    attack_rounds: tuple[int, ...] = (3, 5)
    targets: tuple[int, ...] | None = None  # client ids the attack targets; None: all
    threshold_db: float = 30.0
    guard_policy: str = "abstain"
    guard_detectors: tuple[str, ...] = ()  # empty: the Guard's defaults
    guard_thresholds: tuple[tuple[str, float], ...] = ()
    guard_stop_at_first: bool = True  # False: every detector runs (the report compares them)
    seed: int = 0

    @property
    def training(self) -> LocalTraining:
        return LocalTraining(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, steps=self.steps
        )

    def attacks(self, rnd: int, client_id: int) -> bool:
        return rnd in self.attack_rounds and (self.targets is None or client_id in self.targets)

    def to_run_config(self) -> dict[str, str | int | float | bool]:
        """Flat scalars for a Flower run config (``flwr run --run-config`` / pyproject)."""
        out: dict[str, str | int | float | bool] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            key = f.name.replace("_", "-")
            if f.name in ("attack_options", "guard_thresholds"):
                out[key] = ",".join(f"{k}={val}" for k, val in v)
            elif isinstance(v, tuple):
                out[key] = ",".join(str(x) for x in v)
            elif v is None:
                out[key] = ""
            else:
                out[key] = v
        return out

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> Scenario:
        """Inverse of :meth:`to_run_config`; keys not given keep their defaults."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key not in cfg:
                continue
            v = cfg[key]
            if f.name in ("attack_options", "guard_thresholds"):
                kw[f.name] = tuple(_pair(p) for p in str(v).split(",") if p.strip())
            elif f.name in ("attack_rounds",):
                kw[f.name] = tuple(int(x) for x in str(v).split(",") if x.strip())
            elif f.name == "targets":
                kw[f.name] = (
                    tuple(int(x) for x in str(v).split(",") if x.strip())
                    if str(v).strip() not in ("", "all")
                    else None
                )
            elif f.name == "guard_detectors":
                kw[f.name] = tuple(x.strip() for x in str(v).split(",") if x.strip())
            elif f.name == "guard_stop_at_first":
                kw[f.name] = v if isinstance(v, bool) else str(v).strip().lower() == "true"
            elif f.name in ("norm", "train_limit", "steps"):
                kw[f.name] = None if v in ("", None) else (str(v) if f.name == "norm" else int(v))
            else:
                kw[f.name] = type(getattr(cls(), f.name))(v)
        return cls(**kw)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["attack_options"] = dict(self.attack_options)
        d["guard_thresholds"] = dict(self.guard_thresholds)
        return d


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise GradguardError(f"expected KEY=VALUE, got {text!r}")
    value = value.strip()
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


@dataclass
class Setup:
    """What a scenario builds: the initial model, the clients' data, the server's."""

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
    torch.manual_seed(sc.seed)
    model = build_model(sc.model, train.image_shape, train.num_classes, norm=sc.norm)
    return Setup(model, parts, test, aux)


def make_attack(sc: Scenario):
    from gradguard.attacks import get_attack

    return get_attack(sc.attack, **dict(sc.attack_options))


def make_guard(sc: Scenario, template: nn.Module, data: Dataset):
    """The client's Guard, configured from the scenario; ``data`` is the client's own."""
    from gradguard.detect import Guard, GuardConfig

    kw: dict[str, Any] = {
        "policy": sc.guard_policy,
        "thresholds": dict(sc.guard_thresholds),
        "stop_at_first": sc.guard_stop_at_first,
    }
    if sc.guard_detectors:
        kw["detectors"] = tuple(sc.guard_detectors)
    return Guard(GuardConfig(**kw), template=template, data=data)


@dataclass
class ClientLeak:
    """What the attacker recovered from one client's update in one round."""

    client_id: int
    leaked: int  # reconstructions matching a true image at PSNR >= threshold
    recovered: int  # reconstructions the attack returned
    psnr_mean: float
    true: torch.Tensor | None = None  # best matched pairs, for the report
    recon: torch.Tensor | None = None


@dataclass
class VerdictRecord:
    client_id: int
    malicious: bool
    allowed: bool
    score: float
    summary: str
    elapsed_s: float = 0.0
    detectors: dict[str, dict] = field(default_factory=dict)  # detect.breakdown
    exposed: int | None = None  # images of the batch this round would expose (exposure audit)
    batch: int | None = None


@dataclass
class RoundReport:
    round: int
    attacked: bool
    targeted: list[int]
    abstained: list[int]
    accuracy: float
    leaks: list[ClientLeak] = field(default_factory=list)
    verdicts: list[VerdictRecord] = field(default_factory=list)
    train_seconds: float = 0.0  # local training of every client that trained (0: not measured)

    @property
    def leaked(self) -> int:
        return sum(leak.leaked for leak in self.leaks)


@dataclass
class RunResult:
    engine: str
    guarded: bool
    attacked: bool
    rounds: list[RoundReport]
    seconds: float

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy if self.rounds else 0.0

    @property
    def leaked(self) -> int:
        return sum(r.leaked for r in self.rounds)

    @property
    def abstentions(self) -> int:
        return sum(len(r.abstained) for r in self.rounds)


def score_leak(
    client_id: int,
    truth: torch.Tensor | None,
    recon: torch.Tensor,
    threshold_db: float,
    keep: int = 8,
) -> ClientLeak:
    """Score a reconstruction against the client's true images (Hungarian match on PSNR)."""
    from gradguard.metrics import match

    if truth is None or len(recon) == 0:
        return ClientLeak(client_id, 0, len(recon), 0.0)
    m = match(truth, recon)
    order = m.psnr.argsort()[::-1][:keep].copy()
    return ClientLeak(
        client_id,
        m.leaked(threshold_db),
        len(recon),
        float(m.psnr.mean()) if len(m.psnr) else 0.0,
        truth[m.true_index[order]].clone(),
        recon[m.recon_index[order]].clone(),
    )


class CheckedGuard:
    """``fl.Client(guard=...)`` callable that keeps the client's history and its verdicts."""

    def __init__(self, client_id: int, guard) -> None:
        self.client_id = client_id
        self.guard = guard
        self.previous: dict[str, torch.Tensor] | None = None
        self.pending: VerdictRecord | None = None

    def __call__(self, model: nn.Module) -> bool:
        from gradguard.detect.breakdown import detector_breakdown, exposure_counts

        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        verdict = self.guard.check(state, previous=self.previous)
        allowed = bool(self.guard.allows(verdict))
        if allowed:
            self.previous = state
        self.pending = VerdictRecord(
            self.client_id,
            bool(verdict.malicious),
            allowed,
            float(verdict.score),
            verdict.summary(),
            float(verdict.elapsed_s),
            detector_breakdown(verdict),
            *exposure_counts(verdict),
        )
        return allowed


def guarded_clients(spec: bool | str | Iterable[int], clients: int) -> set[int]:
    """Which clients run the guard: True/"all", False/"none", or ids ("0,2")."""
    if spec is True or spec == "all":
        return set(range(clients))
    if spec is False or spec in ("none", ""):
        return set()
    if isinstance(spec, str):
        return {int(x) for x in spec.split(",") if x.strip()}
    return set(spec)


def run_inprocess(
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
    on_round: Callable[[RoundReport], None] | None = None,
) -> RunResult:
    """The scenario on gradguard's in-process federation (:mod:`gradguard.fl`).

    ``guarded``: every client (True), none (False) or the given client ids.
    """
    from gradguard.attacks.server.campaign import MaliciousServer

    start = time.perf_counter()
    setup = build(sc)
    chosen = guarded_clients(guarded, sc.clients)
    checks = [
        CheckedGuard(i, make_guard(sc, copy.deepcopy(setup.model), part)) if i in chosen else None
        for i, part in enumerate(setup.parts)
    ]
    clients = [Client(i, part, sc.training, guard=checks[i]) for i, part in enumerate(setup.parts)]
    hook: ServerHook = ServerHook()
    if attacked:
        hook = MaliciousServer(
            make_attack(sc),
            sc.attack_rounds,
            sc.targets,
            setup.aux,
            truth={i: p.x for i, p in enumerate(setup.parts)},
            threshold_db=sc.threshold_db,
        )
    config = FederationConfig(rounds=sc.rounds, training=sc.training, seed=sc.seed)
    fed = Federation(setup.model, clients, setup.test, config, hook)
    reports: list[RoundReport] = []

    def collect(result) -> None:
        leaks = hook.leaks.get(result.round, []) if attacked else []
        verdicts = []
        for c in checks:
            if c is not None and c.pending is not None:
                verdicts.append(c.pending)
                c.pending = None
        targeted = [i for i in range(sc.clients) if attacked and sc.attacks(result.round, i)]
        report = RoundReport(
            result.round,
            bool(targeted),
            targeted,
            list(result.abstained),
            result.accuracy,
            leaks,
            verdicts,
            result.train_seconds,
        )
        reports.append(report)
        if on_round:
            on_round(report)

    fed.run(progress=progress, on_round=collect)
    return RunResult("inprocess", bool(chosen), attacked, reports, time.perf_counter() - start)


def result_to_dict(result: RunResult) -> dict[str, Any]:
    """JSON-ready summary of a run (images left out)."""
    return {
        "engine": result.engine,
        "guarded": result.guarded,
        "attacked": result.attacked,
        "seconds": round(result.seconds, 3),
        "final_accuracy": result.final_accuracy,
        "leaked": result.leaked,
        "abstentions": result.abstentions,
        "rounds": [
            {
                "round": r.round,
                "attacked": r.attacked,
                "targeted": r.targeted,
                "abstained": r.abstained,
                "leaked": r.leaked,
                "accuracy": r.accuracy,
                "leaks": [
                    {
                        "client": k.client_id,
                        "leaked": k.leaked,
                        "recovered": k.recovered,
                        "psnr_mean": k.psnr_mean,
                    }
                    for k in r.leaks
                ],
                "verdicts": [asdict(v) for v in r.verdicts],
                "train_seconds": r.train_seconds,
            }
            for r in result.rounds
        ],
    }


def result_from_dict(d: Mapping[str, Any]) -> RunResult:
    rounds = [
        RoundReport(
            r["round"],
            r["attacked"],
            list(r["targeted"]),
            list(r["abstained"]),
            r["accuracy"],
            [
                ClientLeak(k["client"], k["leaked"], k["recovered"], k["psnr_mean"])
                for k in r["leaks"]
            ],
            [VerdictRecord(**v) for v in r["verdicts"]],
            r.get("train_seconds", 0.0),
        )
        for r in d["rounds"]
    ]
    return RunResult(d["engine"], d["guarded"], d["attacked"], rounds, d["seconds"])
