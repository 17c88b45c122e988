"""The guard as a Flower client mod: inspect every received model before a handler uses it.

``ClientApp(mods=[guard_mod(template, data)])`` runs gradguard's Guard on every ArrayRecord
of every incoming message (train, evaluate, query, and subtypes such as ``train.custom``)
before the handler touches the client's private data. Messages without arrays pass through.
When a model is flagged, or cannot be verified, or anything at all goes wrong (bad settings,
a template or data function that raises, a message carrying an Error), the client abstains:
the mod replies ``Error(ErrorCode.MOD_FAILED_PRECONDITION)`` whose reason is
``"gradguard abstained: {...}"``, the verdict record (:mod:`.verdict`); the handler never
runs, and the server's strategy counts one failure and goes on. The mod itself never raises.

Settings belong to the client (seed 000, section 3: the server is the adversary). They come
from the arguments of :func:`guard_mod` (the client's code), overridden per node by the
operator's node configuration (``flower-supernode --node-config "guard-policy='abstain'"``,
read from ``Context.node_config``). The run config is written on the server's side: its
``guard-*`` keys may only tighten the client's settings (add detectors, lower thresholds,
``warn`` -> ``abstain``); a request that would loosen them is ignored with a logged warning.

Accepted rounds add the verdict record to the reply (ConfigRecord ``gradguard-verdict``) and
its numbers to the reply's metrics (``gradguard-score``, ``gradguard-flagged``,
``gradguard-ms``, and ``gradguard-ignored``: how many of the run config's guard requests the
client ignored). The client's reference model is kept in ``Context.state`` (per client,
across rounds) by the one rule of :class:`gradguard.fl.guarded.ClientGuard` (verified and not
flagged) and given to the Guard as history.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Error, Message, MessageType, MetricRecord
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode
from torch import nn

from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.guarded import ClientGuard
from gradguard.integrations.flower.verdict import (
    REASON_PREFIX,
    VERDICT_KEY,
    Fields,
    failure_fields,
    to_reason,
    to_record,
    verdict_fields,
)
from gradguard.options import OptionError, parse_pairs, split_items, split_pair

log = logging.getLogger("gradguard.flower")

STATE_PREVIOUS = "gradguard-previous"  # ArrayRecord: the last model this client accepted
STATE_STATS = "gradguard-stats"  # MetricRecord: checked / abstained counts

# Keys read from the node config (the operator's, authoritative) and from the run config
# (the server's, tighten-only).
KEY_POLICY = "guard-policy"
KEY_DETECTORS = "guard-detectors"
KEY_THRESHOLDS = "guard-thresholds"
GUARD_KEYS = (KEY_POLICY, KEY_DETECTORS, KEY_THRESHOLDS)
POLICIES = ("warn", "abstain", "strict")  # from loosest to strictest
_MAX_CACHED_GUARDS = 4

TemplateFn = Callable[[Context], nn.Module]
DataFn = Callable[[Context], Dataset | None]
CallNext = Callable[[Message, Context], Message]


def arrays_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Tensors from a received ArrayRecord (NumPy arrays, loaded without pickle)."""
    out = {}
    for k in record:
        a = record[k].numpy()
        out[k] = torch.from_numpy(a if a.flags.writeable else a.copy())
    return out


def parse_guard_keys(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """GuardConfig keyword arguments from the ``guard-*`` keys of a Flower config.

    Raises :class:`GradguardError` naming ``source`` on a value that cannot be parsed.
    """
    kw: dict[str, Any] = {}
    if KEY_POLICY in config:
        policy = str(config[KEY_POLICY]).strip()
        if policy not in POLICIES:
            raise GradguardError(
                f"{source} {KEY_POLICY}={policy!r}: expected {', '.join(POLICIES)}"
            )
        kw["policy"] = policy
    if KEY_DETECTORS in config:
        kw["detectors"] = tuple(split_items(config[KEY_DETECTORS]))
    if KEY_THRESHOLDS in config:
        try:
            kw["thresholds"] = parse_pairs(
                str(config[KEY_THRESHOLDS]), float, "detector.key=number"
            )
        except OptionError as e:
            raise GradguardError(f"{source} {KEY_THRESHOLDS}: {e}") from None
    return kw


def client_settings(base: Mapping[str, Any], node_config: Mapping[str, Any]) -> dict[str, Any]:
    """The client's own settings: ``base`` (its code) overridden by its node config.

    Thresholds merge key by key; policy and detectors replace. Raises on invalid values:
    a node the operator misconfigured abstains rather than guessing.
    """
    kw = dict(base)
    node = parse_guard_keys(node_config, "node config")
    if "thresholds" in node:
        node["thresholds"] = {**dict(kw.get("thresholds", {})), **node["thresholds"]}
    kw.update(node)
    return kw


def tighten(own: Mapping[str, Any], run_config: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Apply the run config's ``guard-*`` requests to ``own`` where they add checking.

    A run may switch ``warn`` to ``abstain``, add registered detectors, and lower a known
    threshold to a smaller positive finite number. Everything else (``warn``, dropping
    detectors, raising or non-finite thresholds, unknown names, unparsable values) is
    ignored, never applied. Returns the settings and one line per ignored request.
    """
    from gradguard.detect import DETECTORS, GuardConfig
    from gradguard.detect.thresholds import DEFAULTS

    kw = dict(own)
    ignored: list[str] = []
    if not any(k in run_config for k in GUARD_KEYS):
        return kw, ignored
    policy = kw.get("policy", GuardConfig.policy)
    if KEY_POLICY in run_config:
        asked = str(run_config[KEY_POLICY]).strip()
        if asked in POLICIES and POLICIES.index(asked) > POLICIES.index(policy):
            kw["policy"] = asked
        elif asked != policy:
            ignored.append(f"{KEY_POLICY}={asked!r} (the client's policy is {policy!r})")
    detectors = tuple(kw.get("detectors", GuardConfig().detectors))
    if KEY_DETECTORS in run_config:
        asked_list = split_items(run_config[KEY_DETECTORS])
        added = tuple(d for d in asked_list if d in DETECTORS and d not in detectors)
        unknown = [d for d in asked_list if d not in DETECTORS]
        dropped = [d for d in detectors if d not in asked_list]
        if added:
            kw["detectors"] = detectors + added
        if unknown:
            ignored.append(f"{KEY_DETECTORS}: unknown {', '.join(map(repr, unknown))}")
        if dropped:
            ignored.append(f"{KEY_DETECTORS}: a run cannot remove {', '.join(dropped)}")
    if KEY_THRESHOLDS in run_config:
        current = {**DEFAULTS, **dict(kw.get("thresholds", {}))}
        lowered: dict[str, float] = {}
        for pair in split_items(run_config[KEY_THRESHOLDS]):
            key, text = split_pair(pair)
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if key not in DEFAULTS:
                ignored.append(f"{KEY_THRESHOLDS}: unknown key {key!r}")
            elif not (math.isfinite(value) and 0 < value < current[key]):
                ignored.append(
                    f"{KEY_THRESHOLDS}: {key}={text.strip()!r} does not lower {current[key]:g}"
                )
            else:
                lowered[key] = value
        if lowered:
            kw["thresholds"] = {**dict(kw.get("thresholds", {})), **lowered}
    return kw, ignored


class GuardMod:
    """A Flower mod ``(msg, ctx, call_next) -> Message``; build it with :func:`guard_mod`.

    ``config`` holds the client's own GuardConfig keyword arguments; ``enabled`` (a function
    of the Context, client-side) can switch the guard off for a node; ``guard_factory``
    builds the Guard from (settings, template, data).
    """

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
        self._guards: dict[tuple[int, int, str], Any] = {}  # (run, node, settings) -> Guard
        self._ignored: dict[tuple[int, int, str], int] = {}  # run-config requests ignored

    def settings(self, ctx: Context) -> tuple[dict[str, Any], list[str]]:
        """GuardConfig keyword arguments for this node and run, and the run config's
        requests that were ignored."""
        return tighten(client_settings(self.config, ctx.node_config), ctx.run_config)

    def _guard(self, ctx: Context, msg: Message) -> tuple[Any, int]:
        """The Guard for this run and node, and how many run-config requests it ignored."""
        kw, ignored = self.settings(ctx)
        key = (msg.metadata.run_id, ctx.node_id, repr(sorted(kw.items())))
        if key not in self._guards:
            for line in ignored:
                log.warning("node %s: ignored the run config's %s", ctx.node_id, line)
            data = self.data(ctx) if self.data is not None else None
            guard = self.guard_factory(kw, self.template(ctx), data)
            while len(self._guards) >= _MAX_CACHED_GUARDS:
                old = next(iter(self._guards))
                self._guards.pop(old)
                self._ignored.pop(old, None)
            self._guards[key] = guard
            self._ignored[key] = len(ignored)
        return self._guards[key], self._ignored[key]

    def __call__(self, msg: Message, ctx: Context, call_next: CallNext) -> Message:
        try:
            return self._handle(msg, ctx, call_next)
        except Exception as e:  # noqa: BLE001 - the mod never raises: it abstains
            return abstain(msg, ctx, f"gradguard could not run: {type(e).__name__}: {e}")

    def _handle(self, msg: Message, ctx: Context, call_next: CallNext) -> Message:
        if not self._active(ctx):
            return call_next(msg, ctx)
        if msg.has_error():
            return abstain(msg, ctx, f"the message carries an error, not content: {msg.error}")
        records = list(msg.content.array_records.items())
        if not records:
            return _checked_reply(msg, ctx, call_next)
        try:
            guard, ignored = self._guard(ctx, msg)
        except Exception as e:  # noqa: BLE001 - bad settings or a failing template/data fn
            return abstain(msg, ctx, f"the guard could not be set up: {type(e).__name__}: {e}")
        previous = (
            arrays_to_state(ctx.state[STATE_PREVIOUS])
            if STATE_PREVIOUS in ctx.state.array_records
            else None
        )
        check = ClientGuard(guard, previous)
        verdicts = []
        for name, record in records:
            try:
                received = arrays_to_state(record)
            except Exception as e:  # noqa: BLE001 - hostile or malformed arrays
                return abstain(msg, ctx, f"unreadable arrays in {name!r} ({type(e).__name__}: {e})")
            verdict, allowed = check.review(received)
            if check.previous is not previous:  # the adapter's one rule picked a new reference
                previous = check.previous
                ctx.state[STATE_PREVIOUS] = ArrayRecord(previous)
            if not allowed:
                label = f"{name!r}: " if len(records) > 1 else ""
                fields = verdict_fields([verdict], allowed=False, ignored=ignored)
                fields["summary"] = f"{label}{fields['summary']}"
                return _abstain(msg, ctx, fields)
            verdicts.append(verdict)
        log.info(
            "node %s: gradguard accepted the model (%s): %s",
            ctx.node_id,
            msg.metadata.message_type,
            "; ".join(v.summary() for v in verdicts),
        )
        _count(ctx, abstained=False)
        reply = _checked_reply(msg, ctx, call_next)
        if reply.has_error():
            return reply
        reply.content[VERDICT_KEY] = to_record(verdict_fields(verdicts, True, ignored))
        for metrics in reply.content.metric_records.values():
            metrics["gradguard-score"] = float(max(v.score for v in verdicts))
            metrics["gradguard-flagged"] = int(any(v.malicious for v in verdicts))
            metrics["gradguard-ms"] = float(sum(v.elapsed_s for v in verdicts)) * 1000.0
            metrics["gradguard-ignored"] = ignored
        return reply

    def _active(self, ctx: Context) -> bool:
        if self.enabled is None:
            return True
        try:
            return bool(self.enabled(ctx))
        except Exception as e:  # noqa: BLE001 - cannot tell: stay on (fail closed)
            log.warning("node %s: cannot tell whether the guard is on (%s); on", ctx.node_id, e)
            return True


def _checked_reply(msg: Message, ctx: Context, call_next: CallNext) -> Message:
    """The handler's reply, or an abstention where it raised or where its reply would end
    the server's run (a train reply without an ArrayRecord, anchors: Frameworks)."""
    try:
        reply = call_next(msg, ctx)
    except Exception as e:  # noqa: BLE001
        return abstain(msg, ctx, f"the handler raised {type(e).__name__}: {e}")
    if not isinstance(reply, Message):
        return abstain(msg, ctx, f"the handler returned a {type(reply).__name__}, not a Message")
    if reply.has_error():
        return reply
    category = str(msg.metadata.message_type).split(".", 1)[0]
    if category == MessageType.TRAIN and not reply.content.array_records:
        return abstain(msg, ctx, "the handler's train reply carries no ArrayRecord")
    return reply


def abstain(msg: Message, ctx: Context, why: str) -> Message:
    """The client's abstention when the guard could not give a verdict (:func:`_abstain`)."""
    return _abstain(msg, ctx, failure_fields(why))


def _abstain(msg: Message, ctx: Context, fields: Fields) -> Message:
    """An Error reply whose reason is REASON_PREFIX and the verdict record
    (:mod:`.verdict`)."""
    reason = to_reason(fields)
    try:
        log.warning("node %s: %s: %s", ctx.node_id, REASON_PREFIX, fields["summary"])
        _count(ctx, abstained=True)
    except Exception:  # noqa: BLE001, S110 - a broken Context must not stop the reply
        pass
    error = Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason)
    try:
        return Message(error, reply_to=msg)
    except Exception:  # noqa: BLE001 - metadata Flower itself would not accept
        return make_message(_reply_metadata(msg), error=error)


def _reply_metadata(msg: Message) -> Metadata:
    def get(name: str, default: Any) -> Any:
        try:
            return getattr(msg.metadata, name)
        except Exception:  # noqa: BLE001
            return default

    return Metadata(
        run_id=int(get("run_id", 0) or 0),
        message_id="",
        src_node_id=int(get("dst_node_id", 0) or 0),
        dst_node_id=int(get("src_node_id", 0) or 0),
        reply_to_message_id=str(get("message_id", "")),
        group_id=str(get("group_id", "")),
        created_at=time.time(),
        ttl=60.0,
        message_type=str(get("message_type", "")),
    )


def _count(ctx: Context, abstained: bool) -> None:
    stats = (
        ctx.state[STATE_STATS]
        if STATE_STATS in ctx.state.metric_records
        else MetricRecord({"checked": 0, "abstained": 0})
    )
    stats["checked"] = int(stats["checked"]) + 1
    stats["abstained"] = int(stats["abstained"]) + int(abstained)
    ctx.state[STATE_STATS] = stats


def _default_guard(
    kw: dict[str, Any], template: nn.Module, data: Dataset | None, loss: Any = None
) -> Any:
    from gradguard.detect import Guard, GuardConfig

    return Guard(GuardConfig(**kw), template=template, data=data, loss=loss)


def guard_mod(
    template: nn.Module | TemplateFn,
    data: Any = None,
    *,
    policy: str | None = None,
    detectors: tuple[str, ...] | None = None,
    thresholds: dict[str, float] | None = None,
    enabled: Callable[[Context], bool] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> GuardMod:
    """A Flower client mod that abstains from using a tampered global model.

    ``template`` is the client's own model (the architecture it expects), or a function of
    the Flower ``Context`` returning it; ``data`` a sample of the client's local data (or a
    function of the Context), used by data-dependent detectors: a gradguard Dataset,
    ``(x, y)`` tensors, a torch Dataset or a DataLoader, adapted once here (data the model
    cannot take raises :class:`~gradguard.errors.DataError` here, not at every round);
    ``loss`` the client's batch-mean loss (default cross-entropy). ``policy``, ``detectors``
    and ``thresholds`` are the client's settings; the node config overrides them per node;
    the run config may only tighten them.
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
    if loss is not None and not callable(loss):
        raise GradguardError(f"loss must be a function (outputs, targets) -> loss, got {loss!r}")
    if data is not None and not callable(data):
        from gradguard.data.adapt import as_dataset

        data = as_dataset(data)
        if isinstance(template, nn.Module):
            from gradguard.detect.guard import check_fit

            check_fit(template, data, loss)
    data_fn = data if callable(data) or data is None else (lambda ctx, d=data: d)
    factory = None if loss is None else functools.partial(_default_guard, loss=loss)
    return GuardMod(template_fn, data_fn, config, enabled, factory)
