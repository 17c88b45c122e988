"""A Flower strategy that can play a malicious server (seed paper, section 3 threat model).

:class:`MaliciousFedAvg` is FedAvg (McMahan et al. 2017) aggregated as update deltas, the
same rule as gradguard's in-process federation. In the chosen rounds it sends the chosen
clients a model manipulated by a :class:`~gradguard.attacks.ServerAttack` instead of the
global model, reconstructs data from each of their replies (``reply - sent`` is the client's
update), and, since the bench knows the clients' true data, scores every reconstruction.
Error replies (clients whose guard abstained) are counted and their reasons kept.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import nn

from gradguard.data import Dataset
from gradguard.fl import Update
from gradguard.integrations.flower.mod import REASON_PREFIX, arrays_to_state
from gradguard.scenario import RoundReport, VerdictRecord, score_leak

_SCORE = re.compile(r"\[score=([^\]]+)\]$")


class MaliciousFedAvg(FedAvg):
    """FedAvg whose server turns malicious in ``attack_rounds`` against ``targets``.

    ``targets`` are partition ids (None: every sampled client); ``partition_of`` maps Flower
    node ids to partition ids (the bench learns it with :func:`discover_partitions`).
    ``truth`` maps partition ids to the clients' true images, for scoring leakage.
    """

    def __init__(
        self,
        template: nn.Module,
        attack: Any = None,
        attack_rounds: Iterable[int] = (),
        targets: Iterable[int] | None = None,
        aux: Dataset | None = None,
        truth: Mapping[int, torch.Tensor] | None = None,
        partition_of: Mapping[int, int] | None = None,
        threshold_db: float = 30.0,
        **fedavg: Any,
    ) -> None:
        fedavg.setdefault("fraction_evaluate", 0.0)
        super().__init__(**fedavg)
        self.template = template
        self.attack = attack
        self.attack_rounds = set(attack_rounds) if attack is not None else set()
        self.targets = None if targets is None else set(targets)
        self.aux = aux
        self.truth = dict(truth or {})
        self.partition_of = dict(partition_of or {})
        self.threshold_db = threshold_db
        self.reports: dict[int, RoundReport] = {}
        self._global: dict[str, torch.Tensor] = {}
        self._sent: dict[int, dict[str, torch.Tensor]] = {}
        self._secrets: Any = None

    def pid(self, node_id: int) -> int:
        return self.partition_of.get(node_id, -1)

    def _attacks(self, rnd: int, node_id: int) -> bool:
        return rnd in self.attack_rounds and (
            self.targets is None or self.pid(node_id) in self.targets
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._global = arrays_to_state(arrays)
        self._sent = {}
        targeted = [m for m in messages if self._attacks(server_round, m.metadata.dst_node_id)]
        report = RoundReport(
            server_round,
            bool(targeted),
            sorted(self.pid(m.metadata.dst_node_id) for m in targeted),
            [],
            float("nan"),
        )
        self.reports[server_round] = report
        if not targeted:
            return messages
        model = copy.deepcopy(self.template)
        model.load_state_dict(self._global)
        manipulated, self._secrets = self.attack.manipulate(model, self.aux)
        state = {k: v.detach().clone() for k, v in manipulated.state_dict().items()}
        log(
            WARNING,
            "gradguard: round %s: sending a model manipulated by %r to %s node(s)",
            server_round,
            getattr(self.attack, "name", self.attack),
            len(targeted),
        )
        chosen = {m.metadata.dst_node_id for m in targeted}
        out = []
        for m in messages:
            if m.metadata.dst_node_id in chosen:
                self._sent[m.metadata.dst_node_id] = state
                content = RecordDict(
                    {self.arrayrecord_key: ArrayRecord(state), self.configrecord_key: config}
                )
                m = Message(
                    content=content,
                    message_type=MessageType.TRAIN,
                    dst_node_id=m.metadata.dst_node_id,
                )
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
                "\t> node %s (partition %s) replied with an error: %s",
                m.metadata.src_node_id,
                pid,
                reason,
            )
            report.abstained.append(pid)
            if reason.startswith(REASON_PREFIX):
                score = _SCORE.search(reason)
                summary = _SCORE.sub("", reason[len(REASON_PREFIX) + 2 :]).strip()
                report.verdicts.append(
                    VerdictRecord(
                        pid, True, False, float(score.group(1)) if score else float("nan"), summary
                    )
                )
        report.abstained.sort()
        if not valid:
            return None, None
        deltas, weights, metric_rows = [], [], []
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
            if "gradguard-score" in metrics:
                report.verdicts.append(
                    VerdictRecord(
                        self.pid(node),
                        bool(metrics.get("gradguard-flagged", 0)),
                        True,
                        float(metrics["gradguard-score"]),
                        _accepted(metrics),
                        float(metrics.get("gradguard-ms", 0.0)) / 1000,
                    )
                )
            if node in self._sent:
                update = Update(
                    delta,
                    int(weight),
                    int(metrics.get("local-steps", 1)),
                    float(metrics.get("lr", 0.1)),
                    "delta",
                    self.pid(node),
                )
                recon = self.attack.reconstruct(update, self._secrets)
                report.leaks.append(
                    score_leak(
                        self.pid(node),
                        self.truth.get(self.pid(node)),
                        recon.images,
                        self.threshold_db,
                    )
                )
                log(
                    WARNING,
                    "gradguard: round %s: reconstructed %s images from node %s",
                    server_round,
                    len(recon.images),
                    node,
                )
            deltas.append(delta)
            weights.append(weight)
            metric_rows.append(metrics)
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


def _accepted(metrics: MetricRecord) -> str:
    ignored = int(metrics.get("gradguard-ignored", 0))
    return f"accepted; ignored {ignored} run-config guard requests" if ignored else "accepted"


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
