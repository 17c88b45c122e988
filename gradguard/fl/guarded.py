"""One client's Guard across rounds: the adapter every engine and the Flower mod share.

:class:`ClientGuard` checks each received model against the client's reference (the
"previous" model) and keeps that reference by one rule, under every policy
(:func:`becomes_previous`): a received model becomes the reference only when the Guard
verified it and did not flag it. Under ``warn`` a client may train on a flagged model, but
that model never becomes what the next round is compared with, so an attacker cannot move
the reference step by step; under ``abstain`` and ``strict`` the models the client trains on
are exactly the benign ones.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

State = dict[str, torch.Tensor]


class GuardLike(Protocol):
    """What :class:`gradguard.detect.Guard` offers the adapter."""

    def check(self, received: Any, previous: State | None = None) -> Any: ...

    def allows(self, verdict: Any) -> bool: ...


def becomes_previous(verdict: Any) -> bool:
    """The one rule: verified and not flagged."""
    return bool(verdict.verified) and not bool(verdict.malicious)


class ClientGuard:
    """``guard`` for one client, with its reference model (``previous``) and last verdict.

    Call it as ``fl.Client(guard=ClientGuard(guard))``: ``(model) -> bool``.
    """

    def __init__(self, guard: GuardLike, previous: State | None = None) -> None:
        self.guard = guard
        self.previous = previous
        self.verdict: Any = None
        self.allowed = False

    def review(self, received: Any) -> tuple[Any, bool]:
        """The verdict on ``received`` and whether the client may train on it; never raises
        (the Guard fails closed on anything it cannot read)."""
        verdict = self.guard.check(received, previous=self.previous)
        allowed = bool(self.guard.allows(verdict))
        if becomes_previous(verdict) and isinstance(received, dict):
            self.previous = {k: v.detach().clone() for k, v in received.items()}
        self.verdict, self.allowed = verdict, allowed
        return verdict, allowed

    def reference(self) -> State | None:
        """The model this client trusts: the last one it accepted, else the Guard's
        template (the client's own initial model); None when it has neither."""
        if self.previous is not None:
            return self.previous
        template = getattr(self.guard, "template", None)
        return template.state_dict() if isinstance(template, nn.Module) else None

    def __call__(self, model: nn.Module) -> bool:
        try:
            state: Any = {k: v.detach().clone() for k, v in model.state_dict().items()}
        except Exception:  # noqa: BLE001 - unreadable: the Guard's check fails closed on None
            state = None
        return self.review(state)[1]
