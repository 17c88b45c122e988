"""LOKI: large-scale reconstruction through the secure sum (Zhao et al., S&P 2024, section 4).

Every client gets the same imprint layer but its own convolution kernels. ``conv1`` of
``convnet`` has one block of ``C`` channels per client; client ``k``'s model carries
identity taps (scale ``tap_scale``) in block ``k`` only, every other block zero, and the
stride-2 ``conv2`` maps each block losslessly to its own ``4C`` channels (space to depth).
So client ``k``'s image reaches ``fc1`` only in the columns of block ``k``, and every other
block's columns see zeros. ``fc1`` holds ``bins_per_sample x batch_size`` imprint rows per
client (Robbing the Fed's nested brightness bins, section 3 of Fowl et al.) reading block
``k`` only, with negative biases, so rows of another client's block never fire. The
securely aggregated update then holds client ``k``'s imprint gradient, scaled by its
example weight, in its own rows: adjacent-bin differences (which cancel the weight) return
its images, one bin per sample, for every client at once, under FedSGD or FedAvg.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.attacks.inversion.analytic import invert_bins
from gradguard.attacks.server.imprint import bin_thresholds, measurement_vector
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.update import Update
from gradguard.models import ConvNet


@dataclass(frozen=True)
class LokiSecrets:
    """Per client slot: its ``fc1`` rows (ascending thresholds) and its pixels' columns."""

    slot_of: dict[int, int]  # client id -> block
    rows: list[torch.Tensor]
    features: list[torch.Tensor]
    image_shape: tuple[int, int, int]
    tap_scale: float


class Loki(ServerAttack):
    """LOKI on ``convnet``: ``clients`` channel blocks, ``bins_per_sample x batch_size``
    imprint bins per block (8: a sample is alone in its bin with probability about
    (1 - 1/(8B))^(B-1), 88% at B = 64; 4 caps a round near 78%).

    FedAvg drift: over local steps the head's bin columns drift as ``imprint_scale /
    head_scale``, the imprint rows (in bin widths) as ``head_scale tap_scale^2 /
    imprint_scale``, the identity taps as ``imprint_scale head_scale / tap_scale^2``.
    Through SecAgg+ (clipping sized to ``fc1``, whose largest entry is a bias ~
    ``imprint_scale``) a pixel's rounding error goes as ``imprint_scale / (head_scale
    tap_scale)``. The defaults were chosen by simulating the round on the server's own
    auxiliary data (``benchmarks/loki_tuning.py``; docs/secagg.md), in-process and through
    Flower's quantisation; scales 1 give the textbook magnitudes.
    """

    name = "loki"
    models = ("convnet",)
    takes_batch_size = True
    per_client = True
    secure_sum = True
    threat_model = ThreatModel(
        changes_architecture=False,
        protocols=("fedsgd", "fedavg"),
        aggregation="secure",
        summary="per-client identity-conv channel blocks before a shared imprint layer; "
        "every client's images are separated inside the secure sum",
    )

    def __init__(
        self,
        clients: int = 4,
        batch_size: int = 64,
        bins_per_sample: int = 8,
        tap_scale: float = 0.04,
        image_channels: int = 1,
        imprint_scale: float = 1.5e-5,
        head_scale: float = 0.002,
        aux_limit: int = 10_000,
    ) -> None:
        if clients < 1 or batch_size < 1 or bins_per_sample < 1:
            raise GradguardError("clients, batch_size and bins_per_sample must be positive")
        if not tap_scale > 0:
            raise GradguardError(f"tap_scale must be positive, got {tap_scale}")
        self.clients, self.batch_size = int(clients), int(batch_size)
        self.bins = int(bins_per_sample) * self.batch_size
        self.tap_scale, self.aux_limit = float(tap_scale), int(aux_limit)
        self.image_channels = int(image_channels)
        self.imprint_scale, self.head_scale = float(imprint_scale), float(head_scale)

    def model_kwargs(self, model: str) -> dict[str, Any]:
        if model not in self.models:
            raise GradguardError(f"attack 'loki' applies to convnet (got {model!r})")
        c = self.image_channels
        return {
            "channels": (self.clients * c, 4 * self.clients * c),
            "width": self.clients * self.bins,
        }

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, LokiSecrets]:
        """Client slot 0's model (a single client)."""
        models, secrets = self.manipulate_clients(model, aux, [0])
        return models[0], secrets

    @torch.no_grad()
    def manipulate_clients(
        self, model: nn.Module, aux: Dataset, clients: list[int]
    ) -> tuple[dict[int, nn.Module], LokiSecrets]:
        if not isinstance(model, ConvNet):
            raise GradguardError(f"loki rewrites a convnet; got {type(model).__name__}")
        if len(clients) > self.clients:
            raise GradguardError(
                f"loki has {self.clients} client blocks for {len(clients)} clients "
                f"(--option clients={len(clients)})"
            )
        c, h, w = aux.image_shape
        if c != self.image_channels:
            raise GradguardError(f"the data has {c} channels: --option image_channels={c}")
        need = self.model_kwargs("convnet")
        have = {
            "channels": (model.conv1.out_channels, model.conv2.out_channels),
            "width": model.fc1.out_features,
        }
        if have != need:
            raise GradguardError(f"loki needs convnet {need}, the model has {have}")
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        shared = copy.deepcopy(model)
        for layer in (shared.conv1, shared.conv2, shared.fc1):
            layer.weight.zero_()
            layer.bias.zero_()
        # conv2: every block is space-to-depth of its conv1 block (the same in all models)
        for ch in range(self.clients * c):
            for dy in (0, 1):
                for dx in (0, 1):
                    shared.conv2.weight[4 * ch + 2 * dy + dx, ch, 1 + dy, 1 + dx] = 1.0
        ch, y, x = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
        local = (((4 * ch + 2 * (y % 2) + (x % 2)) * h2 + y // 2) * w2 + x // 2).flatten()
        a = measurement_vector("brightness", aux.image_shape)
        m = aux.x[: self.aux_limit].flatten(1).double() @ a
        q = bin_thresholds(m, self.bins, "empirical")
        # the lowest bin must still be above zero: a block of zeros fires no row
        q[0] = max(float(m.min()) / 2, 1e-3 * float(m.std()))
        scale = (float(m.std()) or 1.0) / self.imprint_scale
        rows, features = [], []
        for slot in range(self.clients):
            r = torch.arange(slot * self.bins, (slot + 1) * self.bins)
            f = local + slot * 4 * c * h2 * w2
            weight = torch.zeros(shared.fc1.in_features, dtype=torch.float64)
            weight[f] = a / (scale * self.tap_scale)
            shared.fc1.weight[r] = weight.expand(self.bins, -1).to(shared.fc1.weight.dtype)
            shared.fc1.bias[r] = (-q / scale).to(shared.fc1.bias.dtype)
            rows.append(r)
            features.append(f)
        # every bin backpropagates the same gradient (Robbing the Fed's equal columns)
        v = torch.randn(shared.head.out_features, 1, generator=torch.Generator().manual_seed(1))
        shared.head.weight.copy_(
            v.expand(-1, shared.head.in_features) * self.head_scale / self.bins
        )
        out: dict[int, nn.Module] = {}
        for slot, client in enumerate(sorted(clients)):
            own = copy.deepcopy(shared)
            for k in range(c):
                own.conv1.weight[slot * c + k, k, 1, 1] = self.tap_scale
            out[client] = own
        slot_of = {client: slot for slot, client in enumerate(sorted(clients))}
        return out, LokiSecrets(slot_of, rows, features, aux.image_shape, self.tap_scale)

    def decoded_keys(self, secrets: LokiSecrets) -> tuple[str, ...]:
        """The parameters the decoder reads (a SecAgg+ server clips to these alone)."""
        return ("fc1.weight", "fc1.bias")

    def _decode(self, g: dict[str, torch.Tensor], slot: int, s: LokiSecrets) -> torch.Tensor:
        feats, _ = invert_bins(
            g["fc1.weight"][s.rows[slot]],
            g["fc1.bias"][s.rows[slot]],
            torch.arange(len(s.rows[slot])),
            limit=self.batch_size,
        )
        pixels = feats[:, s.features[slot]] / s.tap_scale
        return pixels.reshape(len(feats), *s.image_shape).clamp(0, 1)

    def reconstruct(self, update: Update, secrets: LokiSecrets) -> Reconstruction:
        """One client's update: its own block (slot 0 for a single client)."""
        g = _gradient(update)
        slot = secrets.slot_of.get(update.client_id, 0)
        return Reconstruction(self._decode(g, slot, secrets))

    def reconstruct_sum(
        self, aggregate: Update, clients: list[int], secrets: LokiSecrets
    ) -> dict[int, Reconstruction]:
        g = _gradient(aggregate)
        return {
            c: Reconstruction(self._decode(g, slot, secrets), info={"slot": slot})
            for c, slot in secrets.slot_of.items()
            if c in clients
        }


def _gradient(update: Update) -> dict[str, torch.Tensor]:
    g = update.as_gradient()
    if "fc1.weight" not in g or "fc1.bias" not in g:
        raise GradguardError("the update has no fc1: not from a loki model")
    return g


__all__ = ["Loki", "LokiSecrets"]
