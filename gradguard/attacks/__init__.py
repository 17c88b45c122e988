"""Attacks on FL privacy: malicious-server manipulations, malicious clients, inversion.

``get_attack(name, batch_size=None, **options)`` builds an attack from the registry below;
each entry is ``"module:Class"`` so that an attack is one file plus one line here. What an
attack needs is declared on its class (:class:`~gradguard.attacks.base.ServerAttack`).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.errors import GradguardError

ATTACKS: dict[str, str] = {
    "imprint": "gradguard.attacks.server.imprint:Imprint",
    "imprint-arch": "gradguard.attacks.server.imprint:ImprintArch",
    "curious": "gradguard.attacks.server.curious:Curious",
    "fishing-class": "gradguard.attacks.server.fishing:ClassFishing",
    "fishing-feature": "gradguard.attacks.server.fishing:FeatureFishing",
    "inconsistency": "gradguard.attacks.server.inconsistency:ModelInconsistency",
    "seer": "gradguard.attacks.server.seer:Seer",
    "loki": "gradguard.attacks.server.loki:Loki",
    "dlg": "gradguard.attacks.inversion.dlg:DLG",
    "idlg": "gradguard.attacks.inversion.dlg:IDLG",
    "inverting-gradients": "gradguard.attacks.inversion.inverting:InvertingGradients",
}


def attack_class(name: str) -> type[ServerAttack]:
    """The registered class of attack ``name`` (the one registry lookup)."""
    if name not in ATTACKS:
        raise GradguardError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    module, cls = ATTACKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def with_clients(name: str, options: dict[str, Any], clients: int) -> dict[str, Any]:
    """``options`` with ``clients`` set for an attack whose constructor takes it (a block per
    client: LOKI), unless an option already sets it."""
    options = dict(options)
    if "clients" in inspect.signature(attack_class(name)).parameters:
        options.setdefault("clients", clients)
    return options


def get_attack(name: str, batch_size: int | None = None, **options: Any) -> ServerAttack:
    """Attack ``name`` with ``options`` (its constructor arguments); an attack that declares
    ``takes_batch_size`` gets ``batch_size`` unless an option sets it."""
    klass = attack_class(name)
    options = {k.replace("-", "_"): v for k, v in options.items()}
    params = [p for p in inspect.signature(klass).parameters if p != "self"]
    unknown = [k for k in options if k not in params]
    if unknown:
        raise GradguardError(
            f"attack {name!r} has no option {unknown[0]!r}; valid: {', '.join(params) or 'none'}"
        )
    if klass.takes_batch_size and batch_size is not None:
        options.setdefault("batch_size", batch_size)
    return klass(**options)


__all__ = [
    "ATTACKS",
    "Reconstruction",
    "ServerAttack",
    "ThreatModel",
    "attack_class",
    "get_attack",
    "with_clients",
]
