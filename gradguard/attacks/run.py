"""Run one client round against a manipulated model and score the reconstruction.

The server builds the model (with the attack's width where it needs one), manipulates it
using its auxiliary data (the test split), and sends it to one client holding a batch of
``batch_size`` training images. The client answers with

- ``local_steps=1``: the FedSGD gradient of its batch (``kind="gradient"``);
- ``local_steps=E > 1``: the FedAvg delta after E SGD steps at ``lr``, one local epoch
  over its batch split into E mini-batches of ``ceil(batch_size / E)`` images (every image
  is used once; the model drifts between steps).

The reconstruction is matched to the true batch by the Hungarian algorithm on PSNR
(:func:`gradguard.metrics.match`); ``leaked_fraction`` counts true images recovered at
``psnr_threshold`` dB or more, ``psnr_mean`` / ``ssim_mean`` average the matched pairs.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradguard.attacks import ATTACKS, get_attack
from gradguard.attacks.base import Reconstruction
from gradguard.data import train_test
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining, local_update
from gradguard.fl.update import Update
from gradguard.metrics import Match, match
from gradguard.models import MODELS, build_model


@dataclass
class AttackResult:
    """One attacked round: what the client had, what the server got back, and the score."""

    attack: str
    dataset: str
    model: str
    batch_size: int
    local_steps: int
    originals: torch.Tensor
    labels: torch.Tensor
    reconstruction: Reconstruction
    match: Match
    leaked_fraction: float
    psnr_mean: float
    ssim_mean: float
    seconds: float
    manipulated: nn.Module
    honest: nn.Module
    update: Update
    attacker: Any = None  # the attack object (its options, e.g. an inversion config)
    secrets: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON record printed by ``gradguard attack --json``."""
        return {
            "attack": self.attack,
            "dataset": self.dataset,
            "model": self.model,
            "batch_size": self.batch_size,
            "local_steps": self.local_steps,
            "leaked_fraction": round(self.leaked_fraction, 4),
            "psnr_mean": round(self.psnr_mean, 2),
            "ssim_mean": round(self.ssim_mean, 4),
            "seconds": round(self.seconds, 3),
        }


def build_attack(attack_name: str, batch_size: int, **options: Any):
    """The attack with ``options``; an attack that tunes for a batch size gets the client's."""
    if attack_name not in ATTACKS:
        raise GradguardError(f"unknown attack {attack_name!r}; valid: {', '.join(ATTACKS)}")
    module, cls = ATTACKS[attack_name].split(":")
    import importlib

    klass = getattr(importlib.import_module(module), cls)
    params = inspect.signature(klass).parameters
    unknown = [k for k in options if k not in params]
    if unknown:
        valid = [p for p in params if p not in ("self",)]
        raise GradguardError(
            f"attack {attack_name!r} has no option {unknown[0]!r}; "
            f"valid: {', '.join(valid) or 'none'}"
        )
    if "batch_size" in params and "batch_size" not in options:
        options["batch_size"] = batch_size
    return get_attack(attack_name, **options)


def run_attack(
    attack_name: str,
    dataset: str = "digits",
    model: str = "mlp",
    norm: str | None = None,
    batch_size: int = 64,
    local_steps: int = 1,
    lr: float = 0.05,
    seed: int = 0,
    psnr_threshold: float = 30.0,
    **attack_options: Any,
) -> AttackResult:
    """Attack one client round and score the reconstruction against the client's batch."""
    if model not in MODELS:
        raise GradguardError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if batch_size < 1 or local_steps < 1:
        raise GradguardError("batch size and local steps must be positive")
    attack = build_attack(attack_name, batch_size, **attack_options)
    protocol = "fedsgd" if local_steps == 1 else "fedavg"
    if protocol not in attack.threat_model.protocols:
        raise GradguardError(
            f"attack {attack_name!r} supports "
            f"{', '.join(attack.threat_model.protocols)} only "
            f"(got --local-steps {local_steps})"
        )
    supported = getattr(attack, "models", None)
    if supported is not None and model not in supported:
        raise GradguardError(
            f"attack {attack_name!r} applies to models {', '.join(supported)} (got {model!r})"
        )
    kwargs = attack.model_kwargs(model) if hasattr(attack, "model_kwargs") else {}

    train, aux = train_test(dataset)
    if batch_size > len(train):
        raise GradguardError(f"batch size {batch_size} exceeds the {len(train)} training images")
    torch.manual_seed(seed)
    honest = build_model(model, train.image_shape, train.num_classes, norm, **kwargs)
    g = torch.Generator().manual_seed(seed)
    batch = train.subset(torch.randperm(len(train), generator=g)[:batch_size])

    start = time.perf_counter()
    manipulated, secrets = attack.manipulate(copy.deepcopy(honest), aux)
    if local_steps == 1:
        training = LocalTraining(batch_size=batch_size, lr=lr, fedsgd=True)
    else:
        training = LocalTraining(
            batch_size=math.ceil(batch_size / local_steps), lr=lr, steps=local_steps
        )
    update = local_update(manipulated, batch, training, torch.Generator().manual_seed(seed))
    reconstruction = attack.reconstruct(update, secrets)
    seconds = time.perf_counter() - start

    m = match(batch.x, reconstruction.images)
    return AttackResult(
        attack=attack_name,
        dataset=dataset,
        model=model,
        batch_size=batch_size,
        local_steps=local_steps,
        originals=batch.x,
        labels=batch.y,
        reconstruction=reconstruction,
        match=m,
        leaked_fraction=m.leaked(psnr_threshold) / batch_size,
        psnr_mean=float(m.psnr.mean()) if len(m.psnr) else 0.0,
        ssim_mean=float(m.ssim.mean()) if len(m.ssim) else 0.0,
        seconds=seconds,
        manipulated=manipulated,
        honest=honest,
        update=update,
        attacker=attack,
        secrets=secrets,
        options=dict(attack_options),
    )


__all__ = ["AttackResult", "build_attack", "run_attack"]
