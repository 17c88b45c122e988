"""The ``flower-secagg`` engine: a :class:`~gradguard.bench.scenario.Scenario` through
Flower's real SecAgg+ (``secaggplus_mod`` on the clients, ``SecAggPlusWorkflow`` on the
server), for the attacks built against secure aggregation (LOKI, model inconsistency).

The server is :class:`~gradguard.integrations.flower.secagg.SecAggCampaignFedAvg`: each
client gets the model the bench's Campaign picks, and the Campaign reads only the aggregate
SecAgg+ delivers. Its SecAgg+ parameters are the attacker's precision (clipping range 1.25 x
the largest parameter of the models it will send, quantisation 2^30, ``max_weight`` the
largest partition) at Flower's reconstruction threshold (all shares: one dropout halts the
round). Guarded clients are
:class:`~gradguard.integrations.flower.secagg_client.GuardedSecAggClient` with the
scenario's refusal policy (``drop`` or ``cover``). Each guarded client writes its verdict
record to a folder the bench reads after the run (the server never sees it): a round that
SecAgg+ halts reaches no strategy method, so the strategy alone could not say who refused.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from flwr.common import Context, FitIns, ndarrays_to_parameters, parameters_to_ndarrays

from gradguard.bench.campaign import Campaign
from gradguard.bench.records import RoundReport, RunResult
from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import build, guarded_clients, make_attack, make_campaign, make_guard
from gradguard.fl.cover import SecureRefusal
from gradguard.fl.guarded import ClientGuard
from gradguard.integrations.flower.secagg import (
    SecAggCampaignFedAvg,
    SecAggSettings,
    _BatchClient,
    _state,
    largest_parameter,
    run_secagg,
)
from gradguard.integrations.flower.secagg_client import GuardedSecAggClient
from gradguard.integrations.flower.strategy import _verdict
from gradguard.metrics import accuracy


class _DemoStrategy(SecAggCampaignFedAvg):
    """Tells each client the round number (for its own verdict log; no policy reads it) and,
    as the in-process server does, applies the round's mean delta to the global model it
    kept (not to the models it sent, which the attack manipulated)."""

    def configure_fit(self, server_round, parameters, client_manager):
        self._global = parameters_to_ndarrays(parameters)
        fit = super().configure_fit(server_round, parameters, client_manager)
        return [
            (proxy, FitIns(ins.parameters, {**ins.config, "round": server_round}))
            for proxy, ins in fit
        ]

    def aggregate_fit(self, server_round, results, failures):
        params, metrics = super().aggregate_fit(server_round, results, failures)
        delta = self.aggregates.get(server_round)
        if params is None or delta is None:
            return params, metrics
        keys = list(self.template.state_dict())
        new = [
            g + delta.values[k].numpy().astype(g.dtype) if k in delta.values else g
            for k, g in zip(keys, self._global, strict=True)
        ]
        return ndarrays_to_parameters(new), metrics


def attacker_settings(
    sc: Scenario, campaign: Campaign | None, template, max_weight: float
) -> SecAggSettings:
    """The attacker's precision for this federation: clip at 1.25 x the largest parameter
    of the first attack round's models (or of the initial model), Q = 2^30; ``max_weight``
    the largest partition."""
    states = [template.state_dict()]
    if campaign is not None and sc.attack_rounds:
        clients = range(sc.clients)
        models = campaign.attack.manipulate_clients(
            copy.deepcopy(template), campaign.aux, campaign.targeted(sc.attack_rounds[0], clients)
        )[0]
        states += [m.state_dict() for m in models.values()]
    return SecAggSettings(
        clipping_range=1.25 * max(largest_parameter(states), 1.0),
        quantization_range=2**30,
        modulus_range=2**40,
        max_weight=max_weight,
    )


def run_flower_secagg(
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
) -> RunResult:
    """The scenario through Flower SecAgg+ (``progress`` is not shown)."""
    start = time.perf_counter()
    setup = build(sc)
    chosen = guarded_clients(guarded, sc.clients)
    template = copy.deepcopy(setup.model)
    campaign = make_campaign(sc, setup) if attacked else Campaign(make_attack(sc), ())
    largest_part = float(max(len(p) for p in setup.parts))
    settings = attacker_settings(sc, campaign if attacked else None, template, largest_part)
    steps = sc.epochs * max(math.ceil(len(p) / sc.batch_size) for p in setup.parts)
    evaluator = copy.deepcopy(template)
    accuracies: dict[int, float] = {}

    def evaluate_fn(rnd, parameters, config):
        evaluator.load_state_dict(_state(template, parameters))
        accuracies[rnd] = accuracy(evaluator, setup.test.x, setup.test.y)
        return 0.0, {"accuracy": accuracies[rnd]}

    strategy = _DemoStrategy(
        template,
        campaign,
        {i: len(p) for i, p in enumerate(setup.parts)},
        steps,
        sc.lr,
        min_fit_clients=sc.clients,
        min_available_clients=sc.clients,
        evaluate_fn=evaluate_fn,
    )
    refusal = SecureRefusal(mode=sc.refusal)
    parts, training, seed = setup.parts, sc.training, sc.seed
    with tempfile.TemporaryDirectory(prefix="gradguard-secagg-") as folder:

        def make_client(pid: int, context: Context | None = None):
            if pid not in chosen:
                return _BatchClient(template, parts[pid], training, pid, seed)

            def check() -> ClientGuard:
                return ClientGuard(make_guard(sc, copy.deepcopy(template), parts[pid]))

            state = context.state if context is not None else None
            return GuardedSecAggClient(
                template, parts[pid], training, pid, check, refusal, seed,
                state=state, verdict_log=folder,
            )  # fmt: skip

        run_secagg(
            strategy, template, dict(enumerate(parts)), training, settings,
            rounds=sc.rounds, seed=seed, make_client=make_client,
            log_level=logging.CRITICAL,  # a refusal is a traceback in Flower's log
        )  # fmt: skip
        records = {
            tuple(int(x) for x in p.stem.split("-")): json.loads(p.read_text())
            for p in Path(folder).glob("*.json")
        }
    reports = []
    for rnd in range(1, sc.rounds + 1):
        verdicts = [_verdict(pid, f) for (pid, r), f in sorted(records.items()) if r == rnd]
        reports.append(
            RoundReport(
                rnd,
                bool(attacked and campaign.targeted(rnd, range(sc.clients))),
                campaign.targeted(rnd, range(sc.clients)) if attacked else [],
                sorted(v.client_id for v in verdicts if not v.allowed),
                accuracies.get(rnd, float("nan")),
                campaign.leaks.get(rnd, []),
                verdicts,
            )
        )
    return RunResult("flower-secagg", bool(chosen), attacked, reports, time.perf_counter() - start)


__all__ = ["attacker_settings", "run_flower_secagg"]
