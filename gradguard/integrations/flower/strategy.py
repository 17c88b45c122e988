"""A Flower strategy around the bench's malicious-server campaign (seed paper, section 3).

:class:`MaliciousFedAvg` is FedAvg (McMahan et al. 2017) aggregated as update deltas, the
same rule as gradguard's in-process federation, and plain Flower plumbing around a
:class:`~gradguard.bench.campaign.Campaign`: it sends each node the model the campaign
chooses for its partition, hands the campaign each reply's update (``reply - sent``) and
records what it recovered. The clients' guard verdicts arrive as records
(:mod:`.verdict`): a ConfigRecord in accepted replies, the reason of abstentions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import nn

from gradguard.bench.campaign import Campaign
from gradguard.bench.records import RoundReport, VerdictRecord
from gradguard.fl import Update
from gradguard.integrations.flower.mod import arrays_to_state
from gradguard.integrations.flower.verdict import VERDICT_KEY, Fields, detectors_of, from_reason


class MaliciousFedAvg(FedAvg):
    """FedAvg whose server plays ``campaign`` (None: an honest server).

    ``partition_of`` maps Flower node ids to partition ids, the client ids the campaign
    knows (the bench learns it with :func:`discover_partitions`).
    """

    def __init__(
        self,
        template: nn.Module,
        campaign: Campaign | None = None,
        partition_of: Mapping[int, int] | None = None,
        **fedavg: Any,
    ) -> None:
        fedavg.setdefault("fraction_evaluate", 0.0)
        super().__init__(**fedavg)
        self.template = template
        self.campaign = campaign
        self.partition_of = dict(partition_of or {})
        self.reports: dict[int, RoundReport] = {}
        self._global: dict[str, torch.Tensor] = {}
        self._sent: dict[int, dict[str, torch.Tensor]] = {}  # node id -> manipulated state

    def pid(self, node_id: int) -> int:
        return self.partition_of.get(node_id, -1)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._global = arrays_to_state(arrays)
        self._sent = {}
        pids = [self.pid(m.metadata.dst_node_id) for m in messages]
        targeted = self.campaign.targeted(server_round, pids) if self.campaign else []
        self.reports[server_round] = RoundReport(
            server_round, bool(targeted), targeted, [], float("nan")
        )
        if not targeted:
            return messages
        model = copy.deepcopy(self.template)
        model.load_state_dict(self._global)
        models = self.campaign.models_for(server_round, model, pids)
        states = {id(m): _state(m) for m in models.values()}
        log(
            WARNING,
            "gradguard: round %s: sending models manipulated by %r to %s node(s)",
            server_round,
            self.campaign.attack.name,
            len(models),
        )
        out = []
        for m, pid in zip(messages, pids, strict=True):
            if pid in models:
                node = m.metadata.dst_node_id
                self._sent[node] = states[id(models[pid])]
                content = RecordDict(
                    {
                        self.arrayrecord_key: ArrayRecord(self._sent[node]),
                        self.configrecord_key: config,
                    }
                )
                m = Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node)
            out.append(m)
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        report = self.reports.setdefault(
            server_round, RoundReport(server_round, False, [], [], float("nan"))
        )
        valid = [m for m in replies if not m.has_error()]
        log(
            INFO,
            "aggregate_train: %s results and %s failures",
            len(valid),
            len(replies) - len(valid),
        )
        for m in replies:
            if not m.has_error():
                continue
            pid, reason = self.pid(m.metadata.src_node_id), m.error.reason
            log(
                INFO,
                "\t> node %s (partition %s) replied with an error",
                m.metadata.src_node_id,
                pid,
            )
            report.abstained.append(pid)
            fields = from_reason(reason)
            if fields is not None:
                report.verdicts.append(_verdict(pid, fields))
        report.abstained.sort()
        if not valid:
            return None, None
        deltas, weights, metric_rows = [], [], []
        updates: dict[int, Update] = {}
        for m in valid:
            node = m.metadata.src_node_id
            arrays = next(iter(m.content.array_records.values()))
            metrics = next(iter(m.content.metric_records.values()), MetricRecord())
            received = arrays_to_state(arrays)
            sent = self._sent.get(node, self._global)
            if set(received) != set(self._global):
                log(
                    WARNING,
                    "gradguard: node %s sent arrays that do not match the model; ignored",
                    node,
                )
                continue
            delta = {
                k: received[k] - sent[k]
                for k in self._global
                if self._global[k].is_floating_point()
            }
            weight = float(metrics.get(self.weighted_by_key, 1))
            if VERDICT_KEY in m.content.config_records:
                report.verdicts.append(
                    _verdict(self.pid(node), dict(m.content.config_records[VERDICT_KEY]))
                )
            if node in self._sent:
                updates[self.pid(node)] = Update(
                    delta,
                    int(weight),
                    int(metrics.get("local-steps", 1)),
                    float(metrics.get("lr", 0.1)),
                    "delta",
                    self.pid(node),
                )
            deltas.append(delta)
            weights.append(weight)
            metric_rows.append(metrics)
        if self.campaign is not None and updates:
            for leak in self.campaign.recover(server_round, updates=updates):
                report.leaks.append(leak)
                log(
                    WARNING,
                    "gradguard: round %s: reconstructed %s images of partition %s",
                    server_round,
                    leak.recovered,
                    leak.client_id,
                )
        if not deltas:
            return None, None
        w = torch.tensor(weights, dtype=torch.float64)
        w = w / w.sum()
        new = {k: v.clone() for k, v in self._global.items()}
        for k in deltas[0]:
            step = sum(float(wi) * d[k].double() for wi, d in zip(w, deltas, strict=True))
            new[k] = (self._global[k].double() + step).to(self._global[k].dtype)
        return ArrayRecord(new), _mean_metrics(metric_rows, weights)

    def record_accuracy(self, server_round: int, accuracy: float) -> None:
        if server_round in self.reports:
            self.reports[server_round].accuracy = accuracy


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _verdict(pid: int, fields: Fields) -> VerdictRecord:
    """A client's verdict record as the bench reports it (values a client sent: coerced)."""

    def number(key: str) -> float:
        try:
            return float(fields.get(key, math.nan))
        except (TypeError, ValueError):
            return math.nan

    summary = str(fields.get("summary", ""))
    ignored = number("ignored")
    if ignored > 0:
        summary += f"; ignored {ignored:g} run-config guard requests"
    return VerdictRecord(
        pid,
        bool(fields.get("flagged", True)),
        bool(fields.get("allowed", False)),
        number("score"),
        summary,
        number("elapsed-s"),
        detectors_of(fields),
        *(
            int(v) if math.isfinite(v) and v >= 0 else None
            for v in (number("exposed"), number("batch"))
        ),
    )


def _mean_metrics(rows: list[MetricRecord], weights: list[float]) -> MetricRecord:
    """Weighted mean of the scalar metrics every reply has (guarded and unguarded clients
    report different keys, so plain FedAvg's consistency check would refuse them)."""
    common = set.intersection(*(set(r.keys()) for r in rows)) if rows else set()
    total = sum(weights) or 1.0
    out = MetricRecord()
    for k in sorted(common):
        if all(isinstance(r[k], int | float) for r in rows):
            out[k] = sum(float(r[k]) * w for r, w in zip(rows, weights, strict=True)) / total
    return out


def discover_partitions(grid: Grid, expected: int, timeout: float = 120.0) -> dict[int, int]:
    """Ask every node for its partition id (a bench-side query; honest clients answer).

    Waits until ``expected`` nodes are connected. Returns ``{node_id: partition_id}``.
    """
    import time

    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {expected} Flower nodes connected")
        time.sleep(0.5)
    messages = [
        Message(
            RecordDict({"config": ConfigRecord({"ask": "partition-id"})}),
            message_type=MessageType.QUERY,
            dst_node_id=n,
        )
        for n in nodes
    ]
    out = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_error():
            out[reply.metadata.src_node_id] = int(reply.content["metrics"]["partition-id"])
    return out
