"""Imprint attack, "Robbing the Fed" (Fowl et al., ICLR 2022; seed 000, appendix A.1.1).

Every row of a linear layer computes the same linear measurement ``m(x)`` of the input
(brightness, a random direction or a DCT coefficient) with bias ``-q_i``, where the ``q_i``
are equal-mass quantiles of ``m`` on the server's auxiliary data. Row ``i`` fires for every
sample with ``m(x) > q_i``, so differencing adjacent rows of the gradient isolates the
samples of one bin: ``x = (dW_i - dW_{i+1}) / (db_i - db_{i+1})``, exact when the bin
holds one sample. The layer after is set so each sample's backpropagated gradient is the
same for all bins.

- :class:`Imprint` rewrites parameters only: the first linear layer of ``mlp`` (width =
  bins), or of ``convnet`` behind identity convolutions (:mod:`.passthrough`).
- :class:`ImprintArch` puts the block ``Linear(N -> K) -> ReLU -> Linear(K -> N)`` in front
  of any model (with a skip connection, so the model still classifies).

Both work on a FedSGD gradient and on a FedAvg delta (summed gradients of the local
steps); with more local steps the rows drift apart and recovery degrades.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.attacks.inversion.analytic import invert_bins
from gradguard.attacks.server.disguise import (
    honest_activations,
    honest_row_norms,
    layer_inputs,
    loud_directions,
    pretrain,
    proportional_columns,
    row_noise,
)
from gradguard.attacks.server.passthrough import (
    SUPPORTED,
    LinearTarget,
    check_width,
    features_to_pixels,
    pixels_to_weights,
    reach_first_linear,
)
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.update import Update

Measurement = Literal["brightness", "random", "dct"]
MEASUREMENTS = ("brightness", "random", "dct")


@dataclass(frozen=True)
class ImprintSecrets:
    """What the server keeps to decode: the imprinted layer and how pixels reach it."""

    weight_key: str
    bias_key: str
    order: torch.Tensor  # rows by ascending threshold
    pixel_to_feature: torch.Tensor
    image_shape: tuple[int, int, int]
    thresholds: torch.Tensor
    gain: torch.Tensor | None = None  # per row: the factor its backpropagated gradient carries
    pixel_map: torch.Tensor | None = None  # first-layer inputs = pixels @ pixel_map


def measurement_vector(
    kind: str, image_shape: tuple[int, int, int], seed: int = 0, dct: tuple[int, int] = (0, 1)
) -> torch.Tensor:
    """The linear functional ``m(x) = a . x`` on flattened images (unit norm)."""
    c, h, w = image_shape
    if kind == "brightness":
        a = torch.ones(c, h, w)
    elif kind == "random":
        a = torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))
    elif kind == "dct":
        u, v = dct
        if not (0 <= u < h and 0 <= v < w):
            raise GradguardError(f"dct coefficient {dct} outside a {h}x{w} image")
        ys = torch.cos(math.pi * (2 * torch.arange(h) + 1) * u / (2 * h))
        xs = torch.cos(math.pi * (2 * torch.arange(w) + 1) * v / (2 * w))
        a = (ys[:, None] * xs[None, :]).expand(c, h, w).clone()
    else:
        raise GradguardError(f"unknown measurement {kind!r}; valid: {', '.join(MEASUREMENTS)}")
    a = a.flatten().double()
    return a / a.norm()


def bin_thresholds(values: torch.Tensor, bins: int, quantiles: str = "gaussian") -> torch.Tensor:
    """``bins`` ascending thresholds splitting ``values`` into equal-mass bins.

    The lowest threshold sits below all the data so every sample fires at least one row;
    the others are the ``k / bins`` quantiles of a Gaussian fit (Robbing the Fed) or of
    the empirical distribution.
    """
    values = values.double()
    mu, sigma = float(values.mean()), float(values.std()) or 1.0
    levels = [k / bins for k in range(1, bins)]
    if quantiles == "gaussian":
        dist = NormalDist(mu, sigma)
        inner = torch.tensor([dist.inv_cdf(p) for p in levels], dtype=torch.float64)
    elif quantiles == "empirical":
        inner = torch.quantile(values, torch.tensor(levels, dtype=torch.float64))
    else:
        raise GradguardError(f"unknown quantiles {quantiles!r}; valid: gaussian, empirical")
    lowest = min(float(values.min()), mu - 6 * sigma) - sigma
    return torch.cat([torch.tensor([lowest], dtype=torch.float64), inner])


class _ImprintBase(ServerAttack):
    #: factor on the imprint rows' weights and biases (their gradients keep their size)
    imprint_scale: float = 1.0

    def __init__(
        self,
        bins: int = 256,
        measurement: Measurement = "brightness",
        quantiles: Literal["gaussian", "empirical"] = "empirical",
        dct: tuple[int, int] = (0, 1),
        seed: int = 0,
        aux_limit: int = 10_000,
    ) -> None:
        if bins < 2:
            raise GradguardError(f"bins must be at least 2, got {bins}")
        if measurement not in MEASUREMENTS:
            raise GradguardError(
                f"unknown measurement {measurement!r}; valid: {', '.join(MEASUREMENTS)}"
            )
        self.bins, self.measurement, self.quantiles = bins, measurement, quantiles
        self.dct, self.seed, self.aux_limit = tuple(dct), seed, aux_limit

    def _imprint(
        self,
        layer: nn.Linear,
        pixel_to_feature: torch.Tensor,
        aux: Dataset,
        rows: torch.Tensor | None = None,
        pixel_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Write the measurement rows and quantile biases into ``rows`` of ``layer`` (row
        ``rows[k]`` gets the ``k``-th threshold; default all rows); return thresholds."""
        a = measurement_vector(self.measurement, aux.image_shape, self.seed, self.dct)
        m = aux.x[: self.aux_limit].flatten(1).double() @ a
        q = bin_thresholds(m, self.bins, self.quantiles)
        scale = (float(m.std()) or 1.0) / self.imprint_scale
        rows = torch.arange(self.bins) if rows is None else rows
        with torch.no_grad():
            weight = torch.zeros(layer.in_features, dtype=torch.float64)
            weight[pixel_to_feature] = pixels_to_weights(a, pixel_map) / scale
            layer.weight[rows] = weight.expand(self.bins, -1).to(layer.weight.dtype)
            layer.bias[rows] = (-q / scale).to(layer.bias.dtype)
        return q

    def reconstruct(self, update: Update, secrets: ImprintSecrets) -> Reconstruction:
        g = update.as_gradient()
        if secrets.weight_key not in g or secrets.bias_key not in g:
            raise GradguardError(
                f"the update has no {secrets.weight_key}: not from the imprinted model"
            )
        # At most one image per client sample: FedAvg drift leaves faint residues in many
        # bins, so the bins with the strongest bias signal are kept.
        features, rows = invert_bins(
            g[secrets.weight_key],
            g[secrets.bias_key],
            secrets.order,
            limit=update.num_examples,
            gain=secrets.gain,
        )
        pixels = features_to_pixels(features, secrets.pixel_to_feature, secrets.pixel_map)
        images = pixels.reshape(len(features), *secrets.image_shape).clamp(0, 1)
        return Reconstruction(
            images, info={"bins_nonempty": len(rows), "bins": int(len(secrets.order))}
        )


class Imprint(_ImprintBase):
    """Parameter-only imprint on the first linear layer of ``mlp`` / ``convnet``.

    Disguises (defaults: the textbook construction; :mod:`.disguise`):

    - ``row_noise``: relative per-row noise (no two rows within the twin-row cosine);
      ``noise_space="quiet"`` draws it off the directions the auxiliary data occupies;
    - ``shuffle``: the bins sit at random rows (the decoder keeps the order);
    - ``row_scale="honest"``: each row and its bias scaled to the honest row's norm;
      ``"activation"``: to the RMS of the honest row's pre-activation on auxiliary data;
    - ``downstream="proportional"``: the next layer's columns of the bins are ``c_i u``
      with honest norms (textbook ``"equal"``: identical columns); the decoder divides
      the gains ``c_i`` out;
    - ``honest_rows``: that many rows keep the honest model's weights (width = bins +
      honest_rows), which also keeps the next layer's rows from being parallel;
    - ``pretrain_epochs``: start from a model trained that long on the auxiliary data;
    - ``conv_mix`` (``convnet``): pass-through kernels that are blurs, not Diracs
      (:func:`.passthrough.reach_first_linear`), inverted by the decoder;
      ``honest_channels``: the convolution channels the pass-through does not use keep
      the model's weights.

    ``imprint_scale`` multiplies the rows' weights and biases (same bins) and, with
    ``downstream="equal"``, divides the next layer's columns (so that layer's input is
    unchanged and each bin's gradient grows ``1 / imprint_scale``): small rows with large
    gradients survive SecAgg+'s clipping and rounding (docs/secagg.md).
    """

    name = "imprint"
    #: Disguise dials, textbook value first, increasing disguise (benchmarks/frontier.py).
    dials: ClassVar[dict[str, tuple]] = {
        "row_noise": (0.0, 0.01, 0.035, 0.1, 0.2, 0.5),
        "noise_space": ("white", "quiet"),
        "shuffle": (False, True),
        "row_scale": ("textbook", "honest", "activation"),
        "downstream": ("equal", "proportional"),
        "honest_rows": (0, 16, 64),
        "pretrain_epochs": (0, 1, 3),
        "conv_mix": (0.0, 0.5, 0.6, 0.7),
        "honest_channels": (False, True),
    }
    #: The white-box attacker's choice against the default Guard (docs/attacks.md).
    adaptive: ClassVar[dict[str, Any]] = {
        "bins": 240,
        "row_noise": 0.2,
        "noise_space": "quiet",
        "shuffle": True,
        "row_scale": "activation",
        "downstream": "proportional",
        "honest_rows": 16,
        "pretrain_epochs": 0,
        "conv_mix": 0.6,
        "honest_channels": True,
    }
    models = SUPPORTED
    threat_model = ThreatModel(
        changes_architecture=False,
        protocols=("fedsgd", "fedavg"),
        aggregation="single",
        summary="rewrites the first linear layer (identity convolutions before it on convnet); "
        "exact for bins with one sample; FedAvg deltas degrade as local steps grow",
    )

    def __init__(
        self,
        bins: int = 256,
        measurement: Measurement = "brightness",
        quantiles: Literal["gaussian", "empirical"] = "empirical",
        dct: tuple[int, int] = (0, 1),
        seed: int = 0,
        aux_limit: int = 10_000,
        row_noise: float = 0.0,
        noise_space: Literal["white", "quiet"] = "white",
        shuffle: bool = False,
        row_scale: Literal["textbook", "honest", "activation"] = "textbook",
        downstream: Literal["equal", "proportional"] = "equal",
        honest_rows: int = 0,
        pretrain_epochs: int = 0,
        conv_mix: float = 0.0,
        honest_channels: bool = False,
        imprint_scale: float = 1.0,
    ) -> None:
        super().__init__(bins, measurement, quantiles, dct, seed, aux_limit)
        if not imprint_scale > 0:
            raise GradguardError(f"imprint_scale must be positive, got {imprint_scale}")
        self.imprint_scale = float(imprint_scale)
        if row_noise < 0 or honest_rows < 0 or pretrain_epochs < 0:
            raise GradguardError("row_noise, honest_rows and pretrain_epochs must be >= 0")
        if noise_space not in ("white", "quiet"):
            raise GradguardError(f"unknown noise_space {noise_space!r}; valid: white, quiet")
        if row_scale not in ("textbook", "honest", "activation"):
            raise GradguardError(
                f"unknown row_scale {row_scale!r}; valid: textbook, honest, activation"
            )
        if downstream not in ("equal", "proportional"):
            raise GradguardError(f"unknown downstream {downstream!r}; valid: equal, proportional")
        self.row_noise, self.shuffle, self.row_scale = float(row_noise), bool(shuffle), row_scale
        self.downstream, self.honest_rows = downstream, int(honest_rows)
        self.pretrain_epochs, self.conv_mix = int(pretrain_epochs), float(conv_mix)
        self.noise_space, self.honest_channels = noise_space, bool(honest_channels)

    def model_kwargs(self, model_name: str) -> dict:
        """Build arguments that give the first linear layer one unit per bin (plus any
        honest rows)."""
        if model_name not in SUPPORTED:
            raise GradguardError(
                f"attack {self.name!r} applies to models "
                f"{', '.join(SUPPORTED)} (got {model_name!r}); "
                "imprint-arch applies to any model"
            )
        return {"width": self.bins + self.honest_rows}

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, ImprintSecrets]:
        model = copy.deepcopy(model)
        pretrain(model, aux, self.pretrain_epochs, self.seed)
        target = reach_first_linear(model, aux.image_shape, self.conv_mix, self.honest_channels)
        check_width(target, self.bins + self.honest_rows, "bins + honest_rows")
        honest = target.layer.weight.detach().clone()
        honest_b = target.layer.bias.detach().clone()
        x_in = None
        if self.row_scale == "activation" or (self.row_noise > 0 and self.noise_space == "quiet"):
            x_in = layer_inputs(model, target.layer, aux.x[: min(len(aux), 2000)])
        disguise = torch.Generator().manual_seed(self.seed + 2)
        width = target.layer.out_features
        rows = torch.randperm(width, generator=disguise) if self.shuffle else torch.arange(width)
        rows = rows[: self.bins]
        q = self._imprint(target.layer, target.pixel_to_feature, aux, rows, target.pixel_map)
        if self.row_scale == "honest":
            honest_row_norms(target.layer, rows, honest)
        elif self.row_scale == "activation":
            honest_activations(target.layer, rows, honest, honest_b, x_in)
        loud = None
        if self.row_noise > 0 and self.noise_space == "quiet":
            loud = loud_directions(x_in)
        row_noise(target.layer, rows, self.row_noise, disguise, loud)
        gain = None
        if self.downstream == "equal":
            _equalize(target, torch.Generator().manual_seed(self.seed + 1), 1 / self.imprint_scale)
        else:
            gain = proportional_columns(target.downstream, rows, disguise)
        return model, ImprintSecrets(
            f"{target.name}.weight",
            f"{target.name}.bias",
            rows,
            target.pixel_to_feature,
            aux.image_shape,
            q,
            gain,
            target.pixel_map,
        )


@torch.no_grad()
def _equalize(target: LinearTarget, g: torch.Generator, gain: float = 1.0) -> None:
    """Give the next layer identical weight columns, so every bin gets the same gradient;
    ``gain`` multiplies them (``1 / imprint_scale``: the next layer sees what it would at
    scale 1, and each bin's gradient is ``gain`` times larger).

    For ``mlp`` (``fc2`` then ReLU) the weights and biases are positive so every ``fc2``
    unit stays active; for ``convnet`` the next layer is the classifier head.
    """
    down = target.downstream
    v = torch.randn(down.out_features, 1, generator=g)
    if target.downstream_name == "fc2":
        v = v.abs() + 0.1
        down.bias.copy_(0.1 + 0.1 * torch.rand(down.out_features, generator=g))
    down.weight.copy_(v.expand(-1, down.in_features) * gain / down.in_features)


class ImprintBlock(nn.Module):
    """``x + fc2(ReLU(fc1(flatten x)))``: the Robbing-the-Fed block with a skip connection."""

    def __init__(self, image_shape: tuple[int, int, int], bins: int) -> None:
        super().__init__()
        n = math.prod(image_shape)
        self.fc1 = nn.Linear(n, bins)
        self.fc2 = nn.Linear(bins, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.fc1(x.flatten(1)).relu()).view_as(x)


class ImprintedModel(nn.Module):
    """The client's model behind an imprint block (state keys ``imprint.*``, ``model.*``)."""

    def __init__(self, block: ImprintBlock, model: nn.Module) -> None:
        super().__init__()
        self.imprint = block
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.imprint(x))


class ImprintArch(_ImprintBase):
    """Architectural imprint: a new block in front of any model (Robbing the Fed, sec. 3)."""

    name = "imprint-arch"
    models = None  # any model
    threat_model = ThreatModel(
        changes_architecture=True,
        protocols=("fedsgd", "fedavg"),
        aggregation="single",
        summary="inserts Linear(N->bins)-ReLU-Linear(bins->N) before the model; exact for "
        "bins with one sample",
    )

    def model_kwargs(self, model_name: str) -> dict:
        return {}

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, ImprintSecrets]:
        block = ImprintBlock(aux.image_shape, self.bins)
        n = math.prod(aux.image_shape)
        pixels = torch.arange(n)
        q = self._imprint(block.fc1, pixels, aux)
        with torch.no_grad():
            block.fc2.weight.fill_(1.0 / self.bins)
            # Centre the block's output shift on the auxiliary data: the model still works.
            h = block.fc1(aux.x[: self.aux_limit].flatten(1)).relu()
            block.fc2.bias.fill_(-float(h.mean(0).sum()) / self.bins)
        manipulated = ImprintedModel(block, copy.deepcopy(model))
        return manipulated, ImprintSecrets(
            "imprint.fc1.weight",
            "imprint.fc1.bias",
            torch.arange(self.bins),
            pixels,
            aux.image_shape,
            q,
        )


__all__ = [
    "Imprint",
    "ImprintArch",
    "ImprintBlock",
    "ImprintSecrets",
    "ImprintedModel",
    "bin_thresholds",
    "measurement_vector",
]
