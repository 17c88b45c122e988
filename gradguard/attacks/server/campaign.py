"""A malicious server inside the in-process federation (seed paper, section 3 threat model).

:class:`MaliciousServer` is a :class:`gradguard.fl.ServerHook`: in the chosen rounds it sends
the chosen clients a model manipulated by a :class:`~gradguard.attacks.ServerAttack`, and
reconstructs data from each of their updates. When the bench knows the clients' true images
it scores every reconstruction against them (matched PSNR >= ``threshold_db`` counts as
leaked), round by round.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.fl import ServerHook, Update
from gradguard.scenario import ClientLeak, score_leak


class MaliciousServer(ServerHook):
    """Send ``attack``'s manipulated model to ``targets`` (None: everyone) in ``rounds``."""

    def __init__(
        self,
        attack,
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
        self.sent: dict[int, list[int]] = {}
        self._manipulated: tuple[int, nn.Module, Any] | None = None

    def targets_client(self, rnd: int, client_id: int) -> bool:
        return rnd in self.rounds and (self.targets is None or client_id in self.targets)

    def model_for(self, rnd: int, client_id: int, global_model: nn.Module) -> nn.Module:
        if not self.targets_client(rnd, client_id):
            return global_model
        if self._manipulated is None or self._manipulated[0] != rnd:
            model, secrets = self.attack.manipulate(copy.deepcopy(global_model), self.aux)
            self._manipulated = (rnd, model, secrets)
        self.sent.setdefault(rnd, []).append(client_id)
        return self._manipulated[1]

    def observe(
        self,
        rnd: int,
        updates: list[Update] | None,
        aggregate_delta: dict[str, torch.Tensor] | None,
    ) -> None:
        if rnd not in self.rounds or self._manipulated is None or updates is None:
            return
        secrets = self._manipulated[2]
        for update in updates:
            if update.client_id not in self.sent.get(rnd, []):
                continue
            recon = self.attack.reconstruct(update, secrets)
            self.leaks.setdefault(rnd, []).append(
                score_leak(
                    update.client_id,
                    self.truth.get(update.client_id),
                    recon.images,
                    self.threshold_db,
                )
            )

    def leaked(self, rnd: int | None = None) -> int:
        """Images leaked in round ``rnd`` (all rounds when None)."""
        rounds = self.leaks if rnd is None else {rnd: self.leaks.get(rnd, [])}
        return sum(leak.leaked for leaks in rounds.values() for leak in leaks)
