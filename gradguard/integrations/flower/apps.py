"""Flower ``ClientApp`` and ``ServerApp`` factories for gradguard's models, data and attacks.

Both sides rebuild the same :class:`~gradguard.bench.scenario.Scenario` (given to the factory, or
read from the Flower run config), so a client's partition and the server's view of it agree.
Clients train with :func:`gradguard.fl.local_update` behind :class:`GuardMod`. The server
runs :class:`MaliciousFedAvg` around the bench's campaign, attacking only when ``attacked``
is true.

Whether a client runs the guard is the client's decision, never the server's: the
``guarded`` argument of :func:`client_app` (client-side code), else the node config's
``guarded`` key (``flower-supernode --node-config "guarded=false"``), else on. The guard's
settings follow :mod:`gradguard.integrations.flower.mod`: the scenario given in code and the
node config; the run config's ``guard-*`` keys may only tighten them.

``client`` and ``server`` at the bottom are the components ``flwr run`` loads
(``gradguard.integrations.flower.apps:client`` / ``:server``); they read the task (data,
model, training, attack) from the run config. A ``results-path`` run-config key makes the
server write its :func:`~gradguard.bench.records.result_to_dict` there as JSON.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from gradguard.bench.records import RunResult, result_to_dict
from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import (
    Setup,
    build,
    guard_settings,
    guarded_clients,
    make_campaign,
)
from gradguard.errors import GradguardError
from gradguard.fl import local_update
from gradguard.integrations.flower.mod import GuardMod, arrays_to_state
from gradguard.integrations.flower.strategy import MaliciousFedAvg, discover_partitions
from gradguard.metrics import accuracy

_SETUPS: dict[Scenario, Setup] = {}


def _setup(sc: Scenario) -> Setup:
    if sc not in _SETUPS:
        _SETUPS.clear()  # one scenario at a time per process
        _SETUPS[sc] = build(sc)
    return _SETUPS[sc]


def _partition(ctx: Context) -> int:
    return int(ctx.node_config["partition-id"])


def client_app(
    scenario: Scenario | None = None, guarded: bool | str | list[int] | None = None
) -> ClientApp:
    """A ClientApp for ``scenario`` (None: the task from the run config, the guard settings
    from the node config). ``guarded`` (``True``/``"all"``, ``False``/``"none"`` or
    partition ids) picks the guarded partitions in code; None: the node config's
    ``guarded`` key, else on."""

    def scenario_of(ctx: Context) -> Scenario:
        if scenario is not None:
            return scenario
        task = {k: v for k, v in ctx.run_config.items() if not k.startswith("guard")}
        return Scenario.from_run_config(task)

    def is_guarded(ctx: Context) -> bool:
        if guarded is None:
            return node_guarded(ctx.node_config)
        return _partition(ctx) in guarded_clients(guarded, scenario_of(ctx).clients)

    def template(ctx: Context) -> torch.nn.Module:
        return copy.deepcopy(_setup(scenario_of(ctx)).model)

    def data(ctx: Context):
        return _setup(scenario_of(ctx)).parts[_partition(ctx)]

    mod = GuardMod(
        template, data, config=guard_settings(scenario) if scenario else {}, enabled=is_guarded
    )
    app = ClientApp(mods=[mod])

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        sc = scenario_of(ctx)
        setup, pid = _setup(sc), _partition(ctx)
        received = arrays_to_state(msg.content["arrays"])
        model = copy.deepcopy(setup.model)
        model.load_state_dict(received, strict=True)
        rnd = int(msg.content["config"].get("server-round", 0))
        gen = torch.Generator().manual_seed(sc.seed * 100_003 + rnd * 101 + pid)
        update = local_update(model, setup.parts[pid], sc.training, gen, pid)
        new = {k: (v + update.values[k] if k in update.values else v) for k, v in received.items()}
        metrics = MetricRecord(
            {
                "num-examples": update.num_examples,
                "local-steps": update.local_steps,
                "lr": update.lr,
                "loss": float(update.metrics.get("loss", 0.0)),
                "partition-id": pid,
            }
        )
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, ctx: Context) -> Message:
        setup, pid = _setup(scenario_of(ctx)), _partition(ctx)
        model = copy.deepcopy(setup.model)
        model.load_state_dict(arrays_to_state(msg.content["arrays"]), strict=True)
        part = setup.parts[pid]
        metrics = MetricRecord(
            {"num-examples": len(part), "accuracy": accuracy(model, part.x, part.y)}
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    @app.query()
    def query(msg: Message, ctx: Context) -> Message:
        return Message(
            RecordDict({"metrics": MetricRecord({"partition-id": _partition(ctx)})}), reply_to=msg
        )

    return app


def node_guarded(node_config: dict[str, Any]) -> bool:
    """The node config's ``guarded`` switch (bool, or true/false/on/off); absent: on."""
    value = node_config.get("guarded", True)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "on", "yes", "1"):
        return True
    if text in ("false", "off", "no", "0"):
        return False
    raise GradguardError(f"node config guarded={value!r}: expected true or false")


def server_app(
    scenario: Scenario | None = None,
    *,
    attacked: bool | None = None,
    guarded: bool | str | list[int] | None = None,
    sink: Callable[[RunResult, MaliciousFedAvg], None] | None = None,
) -> ServerApp:
    """A ServerApp running ``scenario`` with :class:`MaliciousFedAvg`; ``attacked`` (or the
    run config's ``attacked`` key) turns the attack on. ``sink`` receives the run's result
    (in the same process: the simulation engine)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, ctx: Context) -> None:
        start = time.perf_counter()
        cfg = dict(ctx.run_config)
        sc = scenario or Scenario.from_run_config(cfg)
        attack_on = attacked if attacked is not None else bool(cfg.get("attacked", True))
        # Only the label of the server's report: each client decides whether it is guarded.
        guard_spec = guarded if guarded is not None else cfg.get("guarded", "none")
        setup = build(sc)
        partition_of = discover_partitions(grid, sc.clients)
        campaign = make_campaign(sc, setup) if attack_on else None
        strategy = MaliciousFedAvg(
            copy.deepcopy(setup.model),
            campaign,
            partition_of=partition_of,
            fraction_train=1.0,
            min_train_nodes=sc.clients,
            min_available_nodes=sc.clients,
        )
        evaluator = copy.deepcopy(setup.model)

        def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            evaluator.load_state_dict(arrays_to_state(arrays), strict=True)
            acc = accuracy(evaluator, setup.test.x, setup.test.y)
            strategy.record_accuracy(rnd, acc)
            return MetricRecord({"accuracy": acc})

        strategy.start(
            grid,
            ArrayRecord(setup.model.state_dict()),
            num_rounds=sc.rounds,
            evaluate_fn=evaluate_fn,
        )
        result = RunResult(
            "flower",
            bool(guarded_clients(guard_spec, sc.clients)),
            attack_on,
            [strategy.reports[r] for r in sorted(strategy.reports)],
            time.perf_counter() - start,
        )
        if sink is not None:
            sink(result, strategy)
        if cfg.get("results-path"):
            Path(str(cfg["results-path"])).write_text(json.dumps(result_to_dict(result)))

    return app


client = client_app()
server = server_app()
