"""Deep Leakage from Gradients (Zhu et al., NeurIPS 2019) and iDLG (Zhao et al., 2020).

DLG: L-BFGS on dummy images *and* dummy soft labels, minimising the squared L2 distance
between the dummy gradient and the received one (Zhu et al., Alg. 1). iDLG: the label is
read from the sign of the last-layer gradient first (:mod:`.labels`), then only the images
are optimised (Zhao et al., sec. 3). Both are passive. Protocols: FedSGD; a FedAvg delta is
treated as one gradient (rough for more than one local step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.attacks.inversion.inverting import InversionConfig, invert_update, passive_secrets
from gradguard.data import Dataset
from gradguard.fl.update import Update

_THREAT = ThreatModel(
    changes_architecture=False,
    protocols=("fedsgd", "fedavg"),
    aggregation="single",
    summary="honest model; FedSGD exactly, FedAvg delta treated as one gradient",
)


@dataclass
class DLG(ServerAttack):
    """DLG: L-BFGS (``lr`` 1) on images and soft labels, L2 gradient distance.

    ``iterations`` counts L-BFGS inner iterations (20 per outer step).
    """

    iterations: int = 300
    lr: float = 1.0
    restarts: int = 1
    seed: int = 0

    name = "dlg"
    threat_model = _THREAT
    soft_labels = True

    def config(self) -> InversionConfig:
        return InversionConfig(
            iterations=self.iterations,
            lr=self.lr,
            tv=0.0,
            restarts=self.restarts,
            distance="l2",
            optimizer="lbfgs",
            signed=False,
            decay=False,
            boxed=True,
            soft_labels=self.soft_labels,
            seed=self.seed,
        )

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        return model, passive_secrets(model, aux)

    def reconstruct(self, update: Update, secrets: dict[str, Any]) -> Reconstruction:
        return invert_update(update, secrets, self.config(), self.name)


@dataclass
class IDLG(DLG):
    """iDLG: label from the last-layer gradient sign, then DLG on the images only."""

    name = "idlg"
    soft_labels = False
