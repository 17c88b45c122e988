"""Client-level differential privacy: clip the update to norm C, add Gaussian noise.

The Gaussian mechanism of DP-FedAvg (McMahan et al. 2018): each client clips its update
to L2 norm ``clip`` and adds N(0, (noise_multiplier * clip)^2) to every coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradguard.fl.update import Update, unflatten


@dataclass(frozen=True)
class ClientDP:
    clip: float = 1.0
    noise_multiplier: float = 1.0


def privatize(update: Update, dp: ClientDP, generator: torch.Generator) -> Update:
    delta = update.as_delta()
    flat = torch.cat([v.flatten() for v in delta.values()])
    flat = flat * min(1.0, dp.clip / (float(flat.norm()) + 1e-12))
    flat = flat + torch.randn(flat.shape, generator=generator) * dp.noise_multiplier * dp.clip
    return Update(unflatten(flat, delta), update.num_examples, update.local_steps, update.lr,
                  "delta", update.client_id, dict(update.metrics))
