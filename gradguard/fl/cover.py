"""What a guarded client sends when it refuses a secure-aggregation round (issue 10, item 4).

Under secure aggregation a client that abstains simply leaves the sum. Model inconsistency
(Pasquini et al., CCS 2022, section 4) sends every non-target a model that zeroes its
gradient: a guarded non-target flags it and abstains, and if every non-target does so the
"secure" sum is the target's update alone, so abstaining completes the attack. Under
:class:`SecureRefusal` ``mode="cover"`` a client that refuses still takes part in the
protocol but masks a *cover*: fresh zero-mean Gaussian noise whose per-tensor RMS is
``scale`` times that of the client's own honest update on its reference model (the last
model its Guard accepted; its initial model before any), so the sum is never the target's
alone. The noise is drawn from the operating system's randomness, never from anything the
server sends, and is fresh every round (a fixed cover, e.g. the same honest update twice,
would cancel when the server differences two rounds).

The setting belongs to the client (seed 000, section 3: the server is the adversary): it is
given in the client's code and no message from the server reads or changes it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from gradguard.errors import GradguardError
from gradguard.fl.update import Update

REFUSAL_MODES = ("drop", "cover")


@dataclass(frozen=True)
class SecureRefusal:
    """A guarded client's answer to a flagged model in a secure-aggregation round.

    ``mode``: ``"drop"`` leaves the round (today's abstention: the sum loses this client),
    ``"cover"`` stays in it with a masked noise cover (see the module docstring).
    ``scale``: the cover's per-tensor RMS over that of the client's honest update.
    ``report``: tell the server in the reply's metrics that this reply is a cover (the sum
    is masked either way; the server learns only that this client refused).
    """

    mode: str = "cover"
    scale: float = 1.0
    report: bool = True

    def __post_init__(self) -> None:
        if self.mode not in REFUSAL_MODES:
            raise GradguardError(
                f"unknown refusal mode {self.mode!r}; valid: {', '.join(REFUSAL_MODES)}"
            )
        if not (self.scale > 0):
            raise GradguardError(f"the cover's scale must be > 0 (got {self.scale})")


def cover_update(
    honest: Update, scale: float = 1.0, generator: torch.Generator | None = None
) -> Update:
    """A cover for ``honest`` (the client's update on its reference model): zero-mean
    Gaussian noise, per tensor with ``scale`` times the RMS of ``honest``'s delta; the same
    example count, so the sum's weighting does not single it out. ``generator``: for tests;
    by default seeded from the operating system's randomness."""
    g = generator or torch.Generator().manual_seed(secrets.randbits(63))
    noise = {}
    for k, d in honest.as_delta().items():
        rms = d.double().pow(2).mean().sqrt().item() if d.numel() else 0.0
        noise[k] = (torch.randn(d.shape, generator=g, dtype=torch.float64) * scale * rms).to(
            d.dtype
        )
    return Update(
        noise, honest.num_examples, honest.local_steps, honest.lr, "delta", honest.client_id
    )


__all__ = ["REFUSAL_MODES", "SecureRefusal", "cover_update"]
