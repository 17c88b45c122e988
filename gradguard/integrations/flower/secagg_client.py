"""A guarded client behind Flower's SecAgg+ (``secaggplus_mod``), with its refusal policy.

:class:`GuardedSecAggClient` runs the Guard (:class:`gradguard.fl.guarded.ClientGuard`) on
every model it is asked to train. An accepted model is trained as usual. A flagged one is
refused by the client's own :class:`gradguard.fl.cover.SecureRefusal`: ``drop`` raises, so
the client leaves the SecAgg+ round at its masking stage (Flower's dropout path), ``cover``
returns the received model plus a fresh noise cover (the mod masks it like any update), so
the secure sum never holds a lone target's update. The policy is a constructor argument
(the client's code); nothing in the server's ``FitIns`` config is read for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn

from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining
from gradguard.fl.cover import SecureRefusal, cover_update
from gradguard.fl.guarded import ClientGuard
from gradguard.integrations.flower.mod import STATE_PREVIOUS, arrays_to_state
from gradguard.integrations.flower.secagg import _arrays, _BatchClient, _plus, _state
from gradguard.integrations.flower.verdict import verdict_fields

log = logging.getLogger("gradguard.flower")

COVER_METRIC = "gradguard-cover"  # 1 in the reply's metrics when the reply is a cover


class GuardedSecAggClient(_BatchClient):
    """Client ``pid`` on ``batch``, guarded by ``check`` (a :class:`ClientGuard`, or a
    function building one when a model arrives); ``refusal`` is its own policy.

    ``state``: the node's ``Context.state``, where the reference model is kept across
    rounds (Flower builds a client per message). ``verdict_log``: a folder where each fit's
    verdict record is written as ``{pid}-{round}.json`` (the bench's own channel: the
    server of the protocol never reads it). ``refusals`` counts the rounds it refused."""

    def __init__(
        self,
        template: nn.Module,
        batch: Dataset,
        training: LocalTraining,
        pid: int,
        check: ClientGuard | Callable[[], ClientGuard],
        refusal: SecureRefusal | None = None,
        seed: int = 0,
        cover_generator: torch.Generator | None = None,
        state: RecordDict | None = None,
        verdict_log: str | None = None,
    ) -> None:
        super().__init__(template, batch, training, pid, seed)
        self._check, self.refusal = check, refusal or SecureRefusal()
        self.cover_generator = cover_generator
        self.state, self.verdict_log = state, verdict_log
        self.refusals = 0

    @property
    def check(self) -> ClientGuard:
        if not isinstance(self._check, ClientGuard):
            self._check = self._check()
            if self.state is not None and STATE_PREVIOUS in self.state.array_records:
                self._check.previous = arrays_to_state(self.state[STATE_PREVIOUS])
        return self._check

    def _record(self, verdict, allowed: bool, config) -> None:
        if self.state is not None and self.check.previous is not None:
            self.state[STATE_PREVIOUS] = ArrayRecord(self.check.previous)
        if self.verdict_log is None or verdict is None:
            return
        fields = verdict_fields([verdict], allowed)
        fields["covered"] = not allowed and self.refusal.mode == "cover"
        rnd = int(config.get("round", 0)) if isinstance(config.get("round"), int) else 0
        path = Path(self.verdict_log) / f"{self.pid}-{rnd}.json"
        path.write_text(json.dumps(fields))

    def fit(self, parameters, config):
        try:
            received = _state(self.template, parameters)
        except GradguardError as e:  # hostile arrays: refused like a flagged model
            received, verdict, allowed = None, None, False
            log.warning("client %d cannot read the model it received: %s", self.pid, e)
        else:
            verdict, allowed = self.check.review(received)
            self._record(verdict, allowed, config)
        if allowed:
            trained = _plus(received, self._train(received).as_delta())
            return _arrays(trained), len(self.batch), {}
        self.refusals += 1
        summary = verdict.summary() if verdict is not None else "unreadable model"
        if self.refusal.mode == "drop":
            log.warning("client %d refuses the round and drops out: %s", self.pid, summary)
            raise GradguardError(f"gradguard abstained: {summary}")
        log.warning("client %d refuses the round and sends a cover: %s", self.pid, summary)
        reference = self.check.reference() or self.template.state_dict()
        honest = self._train({k: v.clone() for k, v in reference.items()})
        cover = cover_update(honest, self.refusal.scale, self.cover_generator).as_delta()
        # an unreadable model still gets a cover (on the reference): dropping out on a
        # malformed message would hand the server the hazard the cover exists to prevent
        base = received if received is not None else reference
        sent = _plus(base, cover)
        metrics = {COVER_METRIC: 1} if self.refusal.report else {}
        return _arrays(sent), len(self.batch), metrics


__all__ = ["COVER_METRIC", "GuardedSecAggClient"]
