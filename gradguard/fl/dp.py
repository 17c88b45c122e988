"""Client-level differential privacy: clip the update to norm C, add Gaussian noise.

The Gaussian mechanism of DP-FedAvg (McMahan et al. 2018) applied by each client to its own
update, because here the server is the adversary: the client clips its whole update (all
float state entries, flattened) to L2 norm ``clip`` and adds N(0, (noise_multiplier *
clip)^2) to every coordinate before anything leaves it (local DP; the noise in a mean of n
updates is sqrt(n) times that of central DP-FedAvg with the same multiplier).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradguard.errors import GradguardError
from gradguard.fl.update import Update, unflatten


@dataclass(frozen=True)
class ClientDP:
    clip: float = 1.0
    noise_multiplier: float = 1.0

    def __post_init__(self) -> None:
        ok = all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in (self.clip, self.noise_multiplier)
        )
        if not ok or not self.clip > 0 or not self.noise_multiplier >= 0:
            raise GradguardError(
                f"DP needs a finite clip > 0 and a finite noise multiplier >= 0 (got "
                f"clip={self.clip!r}, noise={self.noise_multiplier!r})"
            )


def clip_flat(flat: torch.Tensor, clip: float) -> torch.Tensor:
    """Scale ``flat`` down to L2 norm ``clip`` if it is longer."""
    return flat * min(1.0, clip / (float(flat.norm()) + 1e-12))


def privatize(update: Update, dp: ClientDP, generator: torch.Generator) -> Update:
    """The update as a clipped, noised delta."""
    delta = update.as_delta()
    # a non-finite update stays non-finite here; every aggregator rejects it (logged)
    flat = clip_flat(torch.cat([v.flatten().float() for v in delta.values()]), dp.clip)
    if dp.noise_multiplier > 0:
        flat = flat + torch.randn(flat.shape, generator=generator) * dp.noise_multiplier * dp.clip
    return Update(
        unflatten(flat, delta),
        update.num_examples,
        update.local_steps,
        update.lr,
        "delta",
        update.client_id,
        dict(update.metrics),
    )
