"""The guard as a Flower client mod: inspect the global model before the client trains on it.

``ClientApp(mods=[guard_mod(template_fn, data_fn)])`` runs gradguard's Guard on the arrays of
every incoming train message. When the model is flagged (or cannot be verified: the Guard
fails closed) the client abstains: the mod replies with an ``Error``
(``ErrorCode.MOD_FAILED_PRECONDITION``) whose reason carries the verdict's summary, the train
handler never runs, and the server's strategy counts one failure and goes on. On accepted
rounds the verdict is added to the reply's metrics (``gradguard-score``,
``gradguard-flagged``, ``gradguard-ms``). The last accepted model is kept in
``Context.state`` (per client, across rounds) and given to the Guard as history.

The run config can change the guard at call time: ``guard-policy`` (abstain | warn),
``guard-detectors`` (comma-separated names) and ``guard-thresholds`` (``name=value,...``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Error, Message, MessageType, MetricRecord
from flwr.common.constant import ErrorCode
from torch import nn

from gradguard.data import Dataset

log = logging.getLogger("gradguard.flower")

STATE_PREVIOUS = "gradguard-previous"  # ArrayRecord: the last model this client accepted
STATE_STATS = "gradguard-stats"  # MetricRecord: checked / abstained counts
REASON_PREFIX = "gradguard abstained"

TemplateFn = Callable[[Context], nn.Module]
DataFn = Callable[[Context], Dataset | None]


def arrays_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Tensors from a received ArrayRecord (NumPy arrays, loaded without pickle)."""
    return {k: torch.from_numpy(record[k].numpy().copy()) for k in record}


def guard_config_from_run(
    run_config: dict[str, Any], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """GuardConfig keyword arguments: ``base`` overridden by the run config's guard keys."""
    kw = dict(base or {})
    if str(run_config.get("guard-policy", "")).strip():
        kw["policy"] = str(run_config["guard-policy"]).strip()
    detectors = str(run_config.get("guard-detectors", "")).strip()
    if detectors:
        kw["detectors"] = tuple(d.strip() for d in detectors.split(",") if d.strip())
    thresholds = str(run_config.get("guard-thresholds", "")).strip()
    if thresholds:
        parsed = {}
        for pair in thresholds.split(","):
            key, _, value = pair.partition("=")
            parsed[key.strip()] = float(value)
        kw["thresholds"] = {**kw.get("thresholds", {}), **parsed}
    return kw


class GuardMod:
    """A Flower mod ``(msg, ctx, call_next) -> Message``; build it with :func:`guard_mod`."""

    def __init__(
        self,
        template: TemplateFn,
        data: DataFn | None = None,
        config: dict[str, Any] | None = None,
        enabled: Callable[[Context], bool] | None = None,
        guard_factory: Callable[[dict[str, Any], nn.Module, Dataset | None], Any] | None = None,
    ) -> None:
        self.template = template
        self.data = data
        self.config = dict(config or {})
        self.enabled = enabled
        self.guard_factory = guard_factory or _default_guard
        self._guards: dict[tuple[int, int, str], Any] = {}  # (run, node, config) -> Guard

    def _guard(self, ctx: Context, msg: Message) -> Any:
        kw = guard_config_from_run(dict(ctx.run_config), self.config)
        key = (msg.metadata.run_id, ctx.node_id, repr(sorted(kw.items())))
        if key not in self._guards:
            data = self.data(ctx) if self.data is not None else None
            self._guards[key] = self.guard_factory(kw, self.template(ctx), data)
        return self._guards[key]

    def __call__(
        self, msg: Message, ctx: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctx)
        if self.enabled is not None and not self.enabled(ctx):
            return call_next(msg, ctx)
        guard = self._guard(ctx, msg)
        records = list(msg.content.array_records.values())
        previous = (
            arrays_to_state(ctx.state[STATE_PREVIOUS])
            if STATE_PREVIOUS in ctx.state.array_records
            else None
        )
        if len(records) != 1:
            verdict, allowed = None, False
            summary = f"expected one ArrayRecord in the train message, got {len(records)}"
        else:
            try:
                received = arrays_to_state(records[0])
            except Exception as e:  # hostile or malformed arrays: cannot be verified
                verdict, allowed, summary = None, False, f"unreadable arrays ({e})"
            else:
                try:
                    verdict = guard.check(received, previous=previous)
                    allowed = bool(guard.allows(verdict))
                    summary = verdict.summary()
                except Exception as e:  # the Guard fails closed, even on its own errors
                    verdict, allowed, summary = None, False, f"guard error ({e})"

        stats = _stats(ctx)
        stats["checked"] = int(stats["checked"]) + 1
        if not allowed:
            stats["abstained"] = int(stats["abstained"]) + 1
            ctx.state[STATE_STATS] = stats
            score = f"{verdict.score:.6g}" if verdict is not None else "nan"
            reason = f"{REASON_PREFIX}: {summary} [score={score}]"
            log.warning("node %s: %s", ctx.node_id, reason)
            return Message(
                Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg
            )
        log.info("node %s: gradguard accepted the model: %s", ctx.node_id, summary)
        ctx.state[STATE_STATS] = stats
        reply = call_next(msg, ctx)
        if reply.has_error():
            return reply
        ctx.state[STATE_PREVIOUS] = ArrayRecord(received)
        for metrics in reply.content.metric_records.values():
            metrics["gradguard-score"] = float(verdict.score)
            metrics["gradguard-flagged"] = int(bool(verdict.malicious))
            metrics["gradguard-ms"] = float(verdict.elapsed_s) * 1000.0
        return reply


def _stats(ctx: Context) -> MetricRecord:
    if STATE_STATS in ctx.state.metric_records:
        return ctx.state[STATE_STATS]
    return MetricRecord({"checked": 0, "abstained": 0})


def _default_guard(kw: dict[str, Any], template: nn.Module, data: Dataset | None) -> Any:
    from gradguard.detect import Guard, GuardConfig

    return Guard(GuardConfig(**kw), template=template, data=data)


def guard_mod(
    template: nn.Module | TemplateFn,
    data: Dataset | DataFn | None = None,
    *,
    policy: str | None = None,
    detectors: tuple[str, ...] | None = None,
    thresholds: dict[str, float] | None = None,
    enabled: Callable[[Context], bool] | None = None,
) -> GuardMod:
    """A Flower client mod that abstains from training on a tampered global model.

    ``template`` is the client's own model (the architecture it expects), or a function of
    the Flower ``Context`` returning it; ``data`` a sample of the client's local data (or a
    function of the Context), used by data-dependent detectors. ``policy``, ``detectors`` and
    ``thresholds`` set the Guard's defaults; the run config may override them per run.
    """
    config: dict[str, Any] = {}
    if policy is not None:
        config["policy"] = policy
    if detectors is not None:
        config["detectors"] = tuple(detectors)
    if thresholds is not None:
        config["thresholds"] = dict(thresholds)
    template_fn = (
        template
        if callable(template) and not isinstance(template, nn.Module)
        else (lambda ctx, t=template: t)
    )
    data_fn = data if callable(data) or data is None else (lambda ctx, d=data: d)
    return GuardMod(template_fn, data_fn, config, enabled)
