"""One malicious server's campaign, engine-free (seed paper, section 3 threat model).

A :class:`Campaign` decides which rounds and clients are attacked (the rule is written once,
:meth:`Campaign.targets_client`), which model each targeted client receives
(:meth:`Campaign.models_for`: one manipulated model for all, or each its own for a
``per_client`` attack), and what the server recovers from what comes back
(:meth:`Campaign.recover`: each client's update, or the secure aggregate for a
``secure_sum`` attack), scored against the clients' true images when the bench knows them.
Engines (:mod:`gradguard.bench.inprocess`, the Flower strategy) only move models and updates.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack
from gradguard.bench.records import ClientLeak
from gradguard.bench.scoring import score_leak
from gradguard.data import Dataset
from gradguard.fl import Update


class Campaign:
    """``attack`` against ``targets`` (client ids; None: every client) in ``rounds``.

    ``truth`` maps client ids to their true images (for scoring); ``aux`` is the server's
    auxiliary data. Leaks are kept per round in :attr:`leaks`.
    """

    def __init__(
        self,
        attack: ServerAttack,
        rounds: Iterable[int],
        targets: Iterable[int] | None = None,
        aux: Dataset | None = None,
        truth: Mapping[int, torch.Tensor] | None = None,
        threshold_db: float = 30.0,
    ) -> None:
        self.attack = attack
        self.rounds = set(rounds)
        self.targets = None if targets is None else set(targets)
        self.aux = aux
        self.truth = dict(truth or {})
        self.threshold_db = threshold_db
        self.leaks: dict[int, list[ClientLeak]] = {}
        self.sent: dict[int, list[int]] = {}  # round -> clients sent a manipulated model
        self._secrets: dict[int, Any] = {}

    def targets_client(self, rnd: int, client_id: int) -> bool:
        """Whether ``client_id`` is attacked in round ``rnd`` (the one place this is decided)."""
        return rnd in self.rounds and (self.targets is None or client_id in self.targets)

    def targeted(self, rnd: int, clients: Iterable[int]) -> list[int]:
        return sorted(c for c in clients if self.targets_client(rnd, c))

    def models_for(
        self, rnd: int, global_model: nn.Module, clients: Iterable[int]
    ) -> dict[int, nn.Module]:
        """The manipulated model each targeted client among ``clients`` receives this round
        (the others get the global model); built once per round."""
        targeted = self.targeted(rnd, clients)
        if not targeted:
            return {}
        models, self._secrets[rnd] = self.attack.manipulate_clients(
            copy.deepcopy(global_model), self.aux, targeted
        )
        self.sent[rnd] = sorted(models)
        return models

    def secrets(self, rnd: int) -> Any:
        """What the attack kept from manipulating round ``rnd``'s models (None: none)."""
        return self._secrets.get(rnd)

    def reconstruct(
        self,
        rnd: int,
        updates: Mapping[int, Update] | None = None,
        aggregate: Update | None = None,
    ) -> dict[int, Reconstruction]:
        """Per client, what the attack recovers in round ``rnd``: from each targeted client's
        update, or, for a ``secure_sum`` attack, from the aggregate (summed here from
        ``updates`` when the engine has no secure aggregation)."""
        if rnd not in self._secrets:
            return {}
        secrets, sent = self._secrets[rnd], self.sent.get(rnd, [])
        if self.attack.secure_sum:
            if aggregate is None and updates:
                aggregate = sum_updates(list(updates.values()))
            if aggregate is None:
                return {}
            return self.attack.reconstruct_sum(aggregate, sent, secrets)
        return {
            c: self.attack.reconstruct(update, secrets)
            for c, update in (updates or {}).items()
            if c in sent
        }

    def score(self, rnd: int, recons: Mapping[int, Reconstruction]) -> list[ClientLeak]:
        """Each reconstruction scored against its client's true images; kept in leaks."""
        leaks = [
            score_leak(c, self.truth.get(c), r.images, self.threshold_db) for c, r in recons.items()
        ]
        self.leaks.setdefault(rnd, []).extend(leaks)
        return leaks

    def recover(
        self,
        rnd: int,
        updates: Mapping[int, Update] | None = None,
        aggregate: Update | None = None,
    ) -> list[ClientLeak]:
        """:meth:`reconstruct`, then :meth:`score`."""
        return self.score(rnd, self.reconstruct(rnd, updates, aggregate))

    def leaked(self, rnd: int | None = None) -> int:
        """Images leaked in round ``rnd`` (all rounds when None)."""
        rounds = self.leaks if rnd is None else {rnd: self.leaks.get(rnd, [])}
        return sum(leak.leaked for leaks in rounds.values() for leak in leaks)


def sum_updates(updates: list[Update]) -> Update:
    """The example-weighted mean delta of ``updates``, as the server of a (secure) FedAvg
    round sees it: one Update with every client's examples."""
    total = sum(u.num_examples for u in updates)
    deltas = [u.as_delta() for u in updates]
    values = {
        k: sum(u.num_examples * d[k].double() for u, d in zip(updates, deltas, strict=True))
        / max(1, total)
        for k in deltas[0]
    }
    first = updates[0]
    return Update(
        {k: v.float() for k, v in values.items()}, total, first.local_steps, first.lr, "delta"
    )
