"""Attacks on FL privacy: malicious-server manipulations, malicious clients, inversion.

``get_attack(name, **options)`` builds an attack from the registry below; each entry is
``"module:Class"`` so that an attack is one file plus one line here.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.errors import GradguardError

ATTACKS: dict[str, str] = {
    "imprint": "gradguard.attacks.server.imprint:Imprint",
    "imprint-arch": "gradguard.attacks.server.imprint:ImprintArch",
    "curious": "gradguard.attacks.server.curious:Curious",
    "fishing-class": "gradguard.attacks.server.fishing:ClassFishing",
    "fishing-feature": "gradguard.attacks.server.fishing:FeatureFishing",
    "seer": "gradguard.attacks.server.seer:Seer",
    "dlg": "gradguard.attacks.inversion.dlg:DLG",
    "idlg": "gradguard.attacks.inversion.dlg:IDLG",
    "inverting-gradients": "gradguard.attacks.inversion.inverting:InvertingGradients",
}


def get_attack(name: str, **options: Any) -> ServerAttack:
    if name not in ATTACKS:
        raise GradguardError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    module, cls = ATTACKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["ATTACKS", "Reconstruction", "ServerAttack", "ThreatModel", "get_attack"]
