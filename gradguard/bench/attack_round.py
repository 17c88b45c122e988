"""One attacked round, scored: the single-round runner behind ``gradguard attack``.

The server builds the model (with the attack's build options), manipulates it using its
auxiliary data (the test split) and sends it to ``clients`` clients, each holding a batch of
``batch_size`` training images (client 0 holds the batch a one-client round has). Each
client answers with

- ``local_steps=1``: the FedSGD gradient of its batch (``kind="gradient"``);
- ``local_steps=E > 1``: the FedAvg delta after E SGD steps at ``lr``, one local epoch
  over its batch split into E mini-batches of ``ceil(batch_size / E)`` images (every image
  is used once; the model drifts between steps).

The server reconstructs from each client's update, or, for an attack that reads the secure
aggregate, from the sum of the round computed by gradguard's secure aggregation
(:func:`gradguard.fl.secure.secure_sum`). Scoring is the bench's one path
(:func:`gradguard.bench.scoring.score_leak`): ``leaked_fraction`` counts true images of all
clients recovered at ``psnr_threshold`` dB or more; ``psnr_mean`` / ``ssim_mean`` average the
matched pairs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gradguard.attacks import get_attack, with_clients
from gradguard.attacks.base import Reconstruction
from gradguard.bench.campaign import Campaign
from gradguard.bench.records import ClientLeak
from gradguard.bench.scoring import leaked_fraction
from gradguard.data import train_test
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining, local_update
from gradguard.fl.secure import secure_sum
from gradguard.fl.update import Update, float_state, unflatten
from gradguard.metrics import Match
from gradguard.models import MODELS, build_model


@dataclass
class AttackResult:
    """One attacked round: what the clients had, what the server got back, and the score.

    ``originals``, ``reconstruction``, ``match``, ``manipulated`` and ``update`` are those
    of the first client the attack reconstructed (the only one in a one-client round).
    """

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
    clients: int = 1
    leaks: list[ClientLeak] = field(default_factory=list)
    aggregate: Update | None = None  # the secure sum, for an attack that reads it
    aggregate_cosine_to_target: float | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON record printed by ``gradguard attack --json``."""
        out: dict[str, Any] = {
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
        if self.clients > 1 or self.aggregate is not None:
            out["clients"] = self.clients
            out["leaked"] = {str(k.client_id): k.leaked for k in self.leaks}
        if self.aggregate_cosine_to_target is not None:
            out["aggregate_cosine_to_target"] = round(self.aggregate_cosine_to_target, 6)
        return out


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
    clients: int = 1,
    client_train_mode: bool = True,
    **attack_options: Any,
) -> AttackResult:
    """Attack one round of ``clients`` clients and score every reconstruction; with
    ``client_train_mode=False`` the clients run the model in inference mode."""
    if model not in MODELS:
        raise GradguardError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if batch_size < 1 or local_steps < 1 or clients < 1:
        raise GradguardError("batch size, local steps and clients must be positive")
    attack_options = with_clients(attack_name, attack_options, clients)
    attack = get_attack(attack_name, batch_size=batch_size, **attack_options)
    protocol = "fedsgd" if local_steps == 1 else "fedavg"
    if protocol not in attack.threat_model.protocols:
        raise GradguardError(
            f"attack {attack_name!r} supports "
            f"{', '.join(attack.threat_model.protocols)} only "
            f"(got --local-steps {local_steps})"
        )
    if attack.models is not None and model not in attack.models:
        raise GradguardError(
            f"attack {attack_name!r} applies to models {', '.join(attack.models)} (got {model!r})"
        )
    kwargs = attack.model_kwargs(model)

    train, aux = train_test(dataset)
    if clients * batch_size > len(train):
        raise GradguardError(
            f"{clients} clients x batch size {batch_size} exceed the {len(train)} training images"
        )
    torch.manual_seed(seed)
    honest = build_model(model, train.image_shape, train.num_classes, norm, **kwargs)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    batches = [train.subset(order[c * batch_size : (c + 1) * batch_size]) for c in range(clients)]
    ids = list(range(clients))
    campaign = Campaign(
        attack, (1,), None, aux, {c: b.x for c, b in enumerate(batches)}, psnr_threshold
    )

    start = time.perf_counter()
    models = campaign.models_for(1, honest, ids)
    if local_steps == 1:
        training = LocalTraining(
            batch_size=batch_size, lr=lr, fedsgd=True, train_mode=client_train_mode
        )
    else:
        training = LocalTraining(
            batch_size=math.ceil(batch_size / local_steps),
            lr=lr,
            steps=local_steps,
            train_mode=client_train_mode,
        )
    updates = {
        c: local_update(models[c], batches[c], training, torch.Generator().manual_seed(seed + c), c)
        for c in ids
    }
    aggregate = None
    if attack.secure_sum:
        aggregate = secure_aggregate(list(updates.values()), list(float_state(models[0])), seed)
        recons = campaign.reconstruct(1, aggregate=aggregate)
    else:
        recons = campaign.reconstruct(1, updates=updates)
    seconds = time.perf_counter() - start

    leaks = campaign.score(1, recons)
    if not leaks:
        raise GradguardError(f"attack {attack_name!r} reconstructed nothing")
    first = leaks[0]
    c = first.client_id
    psnr = np.concatenate([k.match.psnr for k in leaks if k.match is not None])
    ssim = np.concatenate([k.match.ssim for k in leaks if k.match is not None])
    cosine = None
    if aggregate is not None:
        cosine = aggregate.cosine(updates[c], list(aggregate.values))
    # the clients nothing was recovered from still count in the fraction
    unread = [ClientLeak(o, 0, 0, 0.0, images=batch_size) for o in ids if o not in recons]
    return AttackResult(
        attack=attack_name,
        dataset=dataset,
        model=model,
        batch_size=batch_size,
        local_steps=local_steps,
        originals=batches[c].x,
        labels=batches[c].y,
        reconstruction=recons[c],
        match=first.match,
        leaked_fraction=leaked_fraction(leaks + unread),
        psnr_mean=float(psnr.mean()) if len(psnr) else 0.0,
        ssim_mean=float(ssim.mean()) if len(ssim) else 0.0,
        seconds=seconds,
        manipulated=models[c],
        honest=honest,
        update=updates[c],
        attacker=attack,
        secrets=campaign.secrets(1),
        options=dict(attack_options),
        clients=clients,
        leaks=leaks,
        aggregate=aggregate,
        aggregate_cosine_to_target=cosine,
    )


def secure_aggregate(updates: list[Update], keys: list[str], seed: int) -> Update:
    """The example-weighted mean delta of ``updates`` as the server obtains it from
    pairwise-masked contributions (:func:`gradguard.fl.secure.secure_sum`)."""
    weights = [float(u.num_examples) for u in updates]
    weighted = [w * u.flat(keys).double() for w, u in zip(weights, updates, strict=True)]
    ids = [u.client_id for u in updates]
    flat = (secure_sum(weighted, ids, seed) / sum(weights)).float()
    like = {k: updates[0].as_delta()[k] for k in keys}
    first = updates[0]
    return Update(unflatten(flat, like), int(sum(weights)), first.local_steps, first.lr, "delta")


__all__ = ["AttackResult", "run_attack", "secure_aggregate"]
