"""Byzantine clients: honest training, then a rewritten update (for ``Client.poison``).

The scaled sign flip sends ``-scale`` times the honest delta, the standard model-poisoning
baseline against which Krum (Blanchard et al. 2017) and the coordinate-wise median and
trimmed mean (Yin et al. 2018) are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradguard.fl.update import Update


@dataclass(frozen=True)
class SignFlip:
    """Send ``-scale * delta`` instead of the honest ``delta``."""

    scale: float = 10.0

    def __call__(self, update: Update) -> Update:
        delta = update.as_delta()
        return Update(
            {k: -self.scale * v for k, v in delta.items()},
            update.num_examples,
            update.local_steps,
            update.lr,
            "delta",
            update.client_id,
            {**update.metrics, "poisoned": 1.0},
        )
