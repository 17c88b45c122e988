"""The in-process engine: a :class:`~gradguard.bench.scenario.Scenario` on gradguard's own
federation (:mod:`gradguard.fl`), the server's attack played by a
:class:`~gradguard.bench.campaign.Campaign`."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from gradguard.bench.campaign import Campaign
from gradguard.bench.records import RoundReport, RunResult, VerdictRecord
from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import build, guarded_clients, make_campaign, make_guard
from gradguard.detect.breakdown import detector_breakdown, exposure_counts
from gradguard.fl import Client, Federation, FederationConfig, ServerHook, Update
from gradguard.fl.cover import SecureRefusal
from gradguard.fl.guarded import ClientGuard


class CampaignServer(ServerHook):
    """The federation's server hook: sends the campaign's models, hands it what the server
    receives: each update, or under secure aggregation only the round's weighted mean delta
    (``examples``: the clients' example counts; ``lr``: their learning rate)."""

    def __init__(
        self,
        campaign: Campaign,
        clients: list[int],
        examples: int = 1,
        lr: float = 1.0,
    ) -> None:
        self.campaign = campaign
        self.clients = clients
        self.examples, self.lr = examples, lr
        self._models: tuple[int, dict[int, nn.Module]] | None = None

    def model_for(self, rnd: int, client_id: int, global_model: nn.Module) -> nn.Module:
        if not self.campaign.targets_client(rnd, client_id):
            return global_model
        if self._models is None or self._models[0] != rnd:
            self._models = (rnd, self.campaign.models_for(rnd, global_model, self.clients))
        return self._models[1].get(client_id, global_model)

    def observe(
        self,
        rnd: int,
        updates: list[Update] | None,
        aggregate_delta: dict[str, torch.Tensor] | None,
    ) -> None:
        if updates is not None:
            self.campaign.recover(rnd, updates={u.client_id: u for u in updates})
        elif aggregate_delta is not None:
            aggregate = Update(aggregate_delta, self.examples, 1, self.lr, "delta")
            self.campaign.recover(rnd, aggregate=aggregate)


def verdict_record(client_id: int, check: ClientGuard) -> VerdictRecord:
    v = check.verdict
    return VerdictRecord(
        client_id,
        bool(v.malicious),
        check.allowed,
        float(v.score),
        v.summary(),
        v.elapsed_s,
        detector_breakdown(v),
        *exposure_counts(v),
    )


def run_inprocess(
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
    on_round: Callable[[RoundReport], None] | None = None,
) -> RunResult:
    """The scenario on the in-process federation; ``guarded``: every client (True), none
    (False) or the given client ids."""
    start = time.perf_counter()
    setup = build(sc)
    chosen = guarded_clients(guarded, sc.clients)
    checks = {
        i: ClientGuard(make_guard(sc, copy.deepcopy(setup.model), part))
        for i, part in enumerate(setup.parts)
        if i in chosen
    }
    refusal = SecureRefusal(mode=sc.refusal) if sc.secure_aggregation else None
    clients = [
        Client(i, part, sc.training, guard=checks.get(i), refusal=refusal)
        for i, part in enumerate(setup.parts)
    ]
    campaign = None
    hook = ServerHook()
    if attacked:
        campaign = make_campaign(sc, setup)
        hook = CampaignServer(
            campaign, list(range(sc.clients)), sum(len(p) for p in setup.parts), sc.lr
        )
    config = FederationConfig(
        rounds=sc.rounds,
        training=sc.training,
        seed=sc.seed,
        secure_aggregation=sc.secure_aggregation,
    )
    fed = Federation(setup.model, clients, setup.test, config, hook)
    reports: list[RoundReport] = []

    def collect(result) -> None:
        verdicts = []
        for i, check in checks.items():
            if check.verdict is not None:
                verdicts.append(verdict_record(i, check))
                check.verdict = None
        targeted = campaign.targeted(result.round, range(sc.clients)) if campaign else []
        report = RoundReport(
            result.round,
            bool(targeted),
            targeted,
            list(result.abstained),
            result.accuracy,
            campaign.leaks.get(result.round, []) if campaign else [],
            verdicts,
            result.train_seconds,
        )
        reports.append(report)
        if on_round:
            on_round(report)

    fed.run(progress=progress, on_round=collect)
    return RunResult("inprocess", bool(chosen), attacked, reports, time.perf_counter() - start)
