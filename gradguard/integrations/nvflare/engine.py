"""Run a :class:`~gradguard.bench.scenario.Scenario` in NVIDIA FLARE's simulator.

:func:`run_nvflare` has the in-process engine's signature and result
(:func:`gradguard.bench.inprocess.run_inprocess`). The job: a malicious server controller
(:class:`MaliciousController`, FedAvg on update deltas, the rule of gradguard's in-process
federation; in the attack rounds it sends the targeted sites the attack's manipulated model
and reconstructs their images from the replies), one site per client training with
:func:`gradguard.fl.local_update` (:class:`ScenarioTrainer`), and on guarded sites the
production :class:`~gradguard.integrations.nvflare.filter.GuardFilter` as task-data filter.
Site ``site-{i+1}`` holds partition ``i``. Both sides rebuild the same scenario from its
run config (:meth:`Scenario.to_run_config`), deterministic under its seed.

The controller writes the run's result as JSON into the workspace; the guarded sites'
filters append their verdicts to a JSON-lines log there, read back into the rounds.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils
from nvflare.app_common.workflows.model_controller import ModelController

from gradguard.bench.records import (
    RoundReport,
    RunResult,
    VerdictRecord,
    result_from_dict,
    result_to_dict,
)
from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import Setup, build, guarded_clients, make_campaign

_SETUPS: dict[Scenario, Setup] = {}
TASK_REQUEST_INTERVAL_S = 0.2


def _setup(config: dict) -> tuple[Scenario, Setup]:
    sc = Scenario.from_run_config(config)
    if sc not in _SETUPS:
        _SETUPS.clear()  # one scenario at a time per process
        _SETUPS[sc] = build(sc)
    return sc, _SETUPS[sc]


def site_name(client_id: int) -> str:
    return f"site-{client_id + 1}"


def client_id(site: str) -> int:
    return int(site.rsplit("-", 1)[1]) - 1


def scenario_model(scenario: dict) -> torch.nn.Module:
    """The scenario's initial model (a GuardFilter ``model`` factory)."""
    return copy.deepcopy(_setup(scenario)[1].model)


def scenario_data(site: str, scenario: dict):
    """The site's partition (a GuardFilter ``data`` factory)."""
    return _setup(scenario)[1].parts[client_id(site)]


def _numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def _torch(params: dict) -> dict[str, torch.Tensor]:
    return {
        k: (v.detach().clone() if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v)))
        for k, v in params.items()
    }


class ScenarioTrainer(Executor):
    """A site of the scenario: trains its partition with gradguard's local update."""

    def __init__(self, scenario: dict) -> None:
        super().__init__()
        self.scenario = scenario

    def execute(
        self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal
    ) -> Shareable:
        from gradguard.fl import local_update

        if task_name != "train":
            return make_reply(ReturnCode.TASK_UNKNOWN)
        sc, setup = _setup(self.scenario)
        pid = client_id(fl_ctx.get_identity_name())
        received_model = FLModelUtils.from_shareable(shareable)
        received = _torch(received_model.params)
        model = copy.deepcopy(setup.model)
        model.load_state_dict(received, strict=True)
        rnd = int(received_model.current_round or 0)
        gen = torch.Generator().manual_seed(sc.seed * 100_003 + rnd * 101 + pid)
        t0 = time.perf_counter()
        update = local_update(model, setup.parts[pid], sc.training, gen, pid)
        train_s = time.perf_counter() - t0
        new = {k: (v + update.values[k] if k in update.values else v) for k, v in received.items()}
        reply = FLModel(
            params=_numpy(new),
            metrics={
                "num_examples": update.num_examples,
                "local_steps": update.local_steps,
                "lr": update.lr,
                "train_s": train_s,
            },
            current_round=rnd,
        )
        return FLModelUtils.to_shareable(reply)


class MaliciousController(ModelController):
    """FedAvg whose server turns malicious in the scenario's attack rounds (seed paper,
    section 3 threat model); writes the run's result to ``results_path``."""

    def __init__(self, scenario: dict, attacked: bool, guarded: str, results_path: str) -> None:
        super().__init__(ignore_result_error=True)
        self.scenario = scenario
        self.attacked = attacked
        self.guarded = guarded
        self.results_path = results_path

    def add_to_fed_job(self, job, ctx, **kwargs) -> None:
        """Add the controller and shorten the server's task-request interval (2 s by
        default): a client that finished a task waits that long before asking again."""
        job.add_controller(self, ctx)
        job.add_params({"server": {"task_request_interval": TASK_REQUEST_INTERVAL_S}}, ctx)

    def run(self) -> None:
        from gradguard.fl.update import Update
        from gradguard.metrics import accuracy

        start = time.perf_counter()
        sc, setup = _setup(self.scenario)
        campaign = make_campaign(sc, setup) if self.attacked else None
        model = copy.deepcopy(setup.model)
        reports = []
        for rnd in range(1, sc.rounds + 1):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            sent_models = campaign.models_for(rnd, model, range(sc.clients)) if campaign else {}
            targeted = sorted(sent_models)
            report = RoundReport(rnd, bool(targeted), targeted, [], float("nan"))
            replies: list[tuple[int, dict, dict, dict]] = []  # (client, sent, received, metrics)
            sends = [([i for i in range(sc.clients) if i not in sent_models], state)]
            for m in {id(m): m for m in sent_models.values()}.values():  # one task per model
                sends.append(([i for i in targeted if sent_models[i] is m], m.state_dict()))
            for ids, sent in sends:
                if not ids:
                    continue
                sent = {k: v.detach().clone() for k, v in sent.items()}
                results = self.send_model_and_wait(
                    task_name="train",
                    data=FLModel(params=_numpy(sent), current_round=rnd, total_rounds=sc.rounds),
                    targets=[site_name(i) for i in ids],
                )
                answered = set()
                for r in results:
                    cid = client_id(r.meta["client_name"])
                    answered.add(cid)
                    replies.append((cid, sent, _torch(r.params), dict(r.metrics or {})))
                report.abstained.extend(i for i in ids if i not in answered)
            report.abstained.sort()
            updates: dict[int, Update] = {}
            deltas, weights = [], []
            for cid, sent, received, metrics in sorted(replies, key=lambda x: x[0]):
                if set(received) != set(state):
                    self.warning(f"site {site_name(cid)} sent weights that do not match; ignored")
                    continue
                delta = {k: received[k] - sent[k] for k in state if state[k].is_floating_point()}
                updates[cid] = Update(
                    delta,
                    int(metrics.get("num_examples", 1)),
                    int(metrics.get("local_steps", 1)),
                    float(metrics.get("lr", sc.lr)),
                    "delta",
                    cid,
                )
                deltas.append(delta)
                weights.append(float(metrics.get("num_examples", 1)))
                report.train_seconds += float(metrics.get("train_s", 0.0))
            if deltas:
                w = torch.tensor(weights, dtype=torch.float64)
                w = w / w.sum()
                with torch.no_grad():
                    current = model.state_dict()
                    for k in deltas[0]:
                        step = sum(
                            float(wi) * d[k].double() for wi, d in zip(w, deltas, strict=True)
                        )
                        current[k].add_(step.to(current[k].dtype))
            if campaign is not None:
                report.leaks = campaign.recover(rnd, updates=updates)
            report.accuracy = accuracy(model, setup.test.x, setup.test.y)
            reports.append(report)
        result = RunResult(
            "nvflare",
            bool(guarded_clients(self.guarded, sc.clients)),
            self.attacked,
            reports,
            time.perf_counter() - start,
        )
        Path(self.results_path).write_text(json.dumps(result_to_dict(result)))


def run_nvflare(
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
    on_round: Callable[[RoundReport], None] | None = None,
) -> RunResult:
    """The scenario as an NVFlare job in the FL simulator (one process per site).

    ``guarded``: every client (True), none (False) or the given client ids; a guarded site
    runs :class:`GuardFilter` on every train task. ``on_round`` is called for every round
    after the run (the simulator runs out of process). ``progress`` is accepted for the
    engine signature; the simulator's own log goes to the workspace.
    """
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.defs import FilterType

    from gradguard.integrations.nvflare.filter import GuardFilter

    start = time.perf_counter()
    config = sc.to_run_config()
    chosen = guarded_clients(guarded, sc.clients)
    spec = ",".join(map(str, sorted(chosen))) or "none"
    with tempfile.TemporaryDirectory(prefix="gradguard-nvflare-") as folder:
        results_path = os.path.join(folder, "result.json")
        verdict_log = os.path.join(folder, "verdicts.jsonl")
        job = FedJob(name="gradguard_scenario", min_clients=sc.clients)
        job.to_server(MaliciousController(config, attacked, spec, results_path))
        for i in range(sc.clients):
            site = site_name(i)
            job.to(ScenarioTrainer(config), site, tasks=["train"])
            if i in chosen:
                job.to(
                    GuardFilter(
                        model=f"{__name__}:scenario_model",
                        model_args={"scenario": config},
                        data=f"{__name__}:scenario_data",
                        data_args={"scenario": config},
                        policy=sc.guard_policy,
                        detectors=list(sc.guard_detectors),
                        thresholds=dict(sc.guard_thresholds),
                        stop_at_first=sc.guard_stop_at_first,
                        verdict_log=verdict_log,
                    ),
                    site,
                    filter_type=FilterType.TASK_DATA,
                    tasks=["train"],
                )
        with _quiet_logs(), _stdout_to_stderr():
            job.simulator_run(
                os.path.join(folder, "workspace"), threads=sc.clients, log_config="CRITICAL"
            )
        if not os.path.exists(results_path):
            raise RuntimeError(
                "the NVFlare simulation ended without a result (its log is in the workspace)"
            )
        result = result_from_dict(json.loads(Path(results_path).read_text()))
        _attach_verdicts(result, verdict_log)
    result.seconds = time.perf_counter() - start
    for r in result.rounds:
        if on_round:
            on_round(r)
    return result


def _attach_verdicts(result: RunResult, verdict_log: str) -> None:
    if not os.path.exists(verdict_log):
        return
    by_round = {r.round: r for r in result.rounds}
    for line in Path(verdict_log).read_text().splitlines():
        v = json.loads(line)
        r = by_round.get(int(v["round"] or 0))
        if r is not None:
            r.verdicts.append(
                VerdictRecord(
                    client_id(v["site"]),
                    v["malicious"],
                    v["allowed"],
                    float(v["score"]),
                    v["summary"],
                    float(v["elapsed_s"]),
                    v.get("detectors", {}),
                    v.get("exposed"),
                    v.get("batch"),
                )
            )
    for r in result.rounds:
        r.verdicts.sort(key=lambda v: v.client_id)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The simulator's processes log to stdout; keep stdout for the caller (``--json``)."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """NVFlare logs every task to the console; keep warnings only while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)
