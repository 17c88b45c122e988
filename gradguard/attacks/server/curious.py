"""Trap weights, "When the Curious Abandon Honesty" (Boenisch et al., EuroS&P 2023).

Each row of the first linear layer gives a random half of the inputs the weight ``-|n|``
and the other half ``s * |n|`` (the same magnitudes, shuffled; ``n ~ N(0, sigma)``), bias
0. On non-negative images a row fires only when its positive half outweighs its negative
half; with ``s < 1`` that is rare, and ``s`` is tuned on auxiliary data so a row fires for
about one sample of a batch: ``tune="global"`` picks one ``s`` for all rows (the paper),
``tune="row"`` (default) gives each row its own ``s_i``, the ``level / batch`` quantile of
the ratio at which that row starts firing on auxiliary images, with ``level`` picked to
isolate the most auxiliary samples. Rows then fire at an even rate, which isolates more
samples (on Fashion-MNIST auxiliary batches of 64: about 0.6 vs 0.46). A row that fired
for one sample alone gives it back exactly: ``x = dW_i / db_i`` (seed 000, A.1.1). On
``convnet`` identity convolutions pass the image to ``fc1`` (:mod:`.passthrough`).

Works on a FedSGD gradient and on a FedAvg delta (summed step gradients; the rows drift
as local steps accumulate). The layer's width must equal ``neurons``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.attacks.inversion.analytic import EMPTY_TOL, invert_rows
from gradguard.attacks.server.disguise import pretrain
from gradguard.attacks.server.passthrough import (
    SUPPORTED,
    check_width,
    features_to_pixels,
    layer_to_pixels,
    pixels_to_layer,
    pixels_to_weights,
    reach_first_linear,
)
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.update import Update

#: Scale factors tried when tuning one ``s`` on auxiliary data (``tune="global"``).
SCALE_GRID = tuple(round(0.5 + 0.01 * k, 2) for k in range(51))
#: Expected firing samples per batch tried when tuning each row (``tune="row"``).
LEVEL_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


@dataclass(frozen=True)
class CuriousSecrets:
    weight_key: str
    bias_key: str
    pixel_to_feature: torch.Tensor
    image_shape: tuple[int, int, int]
    scale: float  # mean of the rows' scale factors
    tuned_score: float  # fraction of an auxiliary batch isolated by some row, at ``scale``
    pixel_weight: torch.Tensor  # the trap rows on the flattened image (rows x pixels)
    rows: torch.Tensor | None = None  # the layer's trap rows (None: all)
    pixel_map: torch.Tensor | None = None  # first-layer inputs = pixels @ pixel_map
    bias: torch.Tensor | None = None  # the trap rows' biases (None: zero)
    bend: float = 0.0  # the pass-through's bijection (passthrough.bent)
    inner_map: torch.Tensor | None = None


def _spread(layer: nn.Linear, traps: torch.Tensor, share: float, g: torch.Generator) -> None:
    """Move every row ``[W_i, b_i]`` of ``layer`` but ``traps`` by ``share`` of its norm, in
    a random direction (in place)."""
    keep = torch.ones(layer.out_features, dtype=torch.bool)
    keep[traps] = False
    rows = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], 1)[keep]
    noise = torch.randn(rows.shape, generator=g)
    noise *= share * rows.norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True)
    layer.weight[keep] += noise[:, :-1]
    layer.bias[keep] += noise[:, -1]


def trap_rows(
    neurons: int, inputs: int, sigma: float, g: torch.Generator, signs: str = "half"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive and negative parts of the trap rows: ``W = s * pos - neg``.

    ``signs="half"`` (the paper): exactly half of each row negative, the positive half
    carrying the same magnitudes shuffled. ``"binomial"``: each entry negative with
    probability 1/2, as in a random honest row, magnitudes drawn independently.
    """
    if signs == "binomial":
        mags = torch.randn(neurons, inputs, generator=g).abs() * sigma
        negative = torch.rand(neurons, inputs, generator=g) < 0.5
        return torch.where(negative, 0.0, mags), torch.where(negative, mags, 0.0)
    half = inputs // 2
    mags = torch.randn(neurons, half, generator=g).abs() * sigma
    pos = torch.zeros(neurons, inputs)
    neg = torch.zeros(neurons, inputs)
    for i in range(neurons):
        perm = torch.randperm(inputs, generator=g)
        neg[i, perm[:half]] = mags[i]
        pos[i, perm[half : 2 * half]] = mags[i, torch.randperm(half, generator=g)]
    return pos, neg


def isolated_fraction(
    pre_pos: torch.Tensor,
    pre_neg: torch.Tensor,
    scale: float | torch.Tensor,
    batch_size: int,
    bias: torch.Tensor | float = 0.0,
) -> float:
    """Mean fraction of each batch's samples that some row fires for alone."""
    fires = (scale * pre_pos - pre_neg + bias) > 0  # samples x rows
    total, batches = 0.0, 0
    for start in range(0, len(fires) - batch_size + 1, batch_size):
        f = fires[start : start + batch_size]
        lone = f.sum(0) == 1
        total += float(f[:, lone].any(1).float().mean())
        batches += 1
    return total / max(1, batches)


class Curious(ServerAttack):
    """Trap-weight attack on the first linear layer of ``mlp`` / ``convnet``.

    Disguises (defaults: the paper's construction):

    - ``signs="binomial"``: each row's count of negative weights is binomial, not half;
    - ``sigma="honest"``: weight magnitudes at the honest layer's own standard deviation;
    - ``bias="honest"``: the rows keep the honest biases (tuning accounts for them;
      the paper's biases are all zero);
    - ``honest_rows``: that many rows keep the honest model's weights (width = neurons +
      honest_rows; the trap rows sit at random positions);
    - ``traps``: only that many of the ``neurons`` rows are traps, the others keep the honest
      weights (fewer rows firing for one sample alone: against ``exposure.lone16/32/64``);
    - ``pretrain_epochs``: start from a model trained that long on the auxiliary data;
    - ``conv_mix``, ``honest_channels`` (``convnet``): blurred pass-through kernels and
      honest unused channels (:func:`.passthrough.reach_first_linear`);
    - ``bend`` (``convnet``): the pass-through bends each pixel by a piecewise-linear
      bijection the decoder undoes (against a linear readout of the images);
    - ``spread``: every row of the layer that is not a trap moves by that share of its norm
      in a random direction (against ``moved``, detect/moved.py: the traps are no longer the
      only rows that moved since the last accepted model).
    """

    name = "curious"
    #: Disguise dials, textbook value first, increasing disguise (benchmarks/frontier.py).
    dials: ClassVar[dict[str, tuple]] = {
        "signs": ("half", "binomial"),
        "sigma": (0.5, "honest"),
        "bias": ("zero", "honest"),
        "honest_rows": (0, 64, 256),
        "traps": (None, 256, 192, 128),
        "pretrain_epochs": (0, 1, 3),
        "conv_mix": (0.0, 0.5, 0.6, 0.7),
        "honest_channels": (False, True),
        "bend": (0.0, 0.9),
    }
    #: The white-box attacker's choice against the default Guard (docs/attacks.md).
    adaptive: ClassVar[dict[str, Any]] = {
        "signs": "binomial",
        "sigma": "honest",
        "bias": "honest",
        "honest_rows": 0,
        "pretrain_epochs": 0,
        "conv_mix": 0.6,
        "honest_channels": True,
        "traps": 128,
    }
    #: The attacker's next answers once ``adaptive`` is flagged (the lone-unit excess over a
    #: fresh init): fewer traps (benchmarks/frontier.py, ``adaptive+traps``).
    adaptive_sweep: ClassVar[dict[str, tuple]] = {
        "traps": (96, 64, 32),
        # once the readout of the images through the convolutions flags the pass-through
        "bend": (0.9, {"bend": 0.9, "traps": 32}),
    }
    models = SUPPORTED
    takes_batch_size = True
    threat_model = ThreatModel(
        changes_architecture=False,
        protocols=("fedsgd", "fedavg"),
        aggregation="single",
        summary="trap weights in the first linear layer (identity convolutions before it on "
        "convnet); exact for rows that fire for one sample",
    )

    def __init__(
        self,
        neurons: int = 1000,
        scale: float | None = None,
        tune: Literal["row", "global"] = "row",
        sigma: float | Literal["honest"] = 0.5,
        batch_size: int = 64,
        seed: int = 0,
        tune_batches: int = 16,
        signs: Literal["half", "binomial"] = "half",
        bias: Literal["zero", "honest"] = "zero",
        honest_rows: int = 0,
        pretrain_epochs: int = 0,
        conv_mix: float = 0.0,
        honest_channels: bool = False,
        traps: int | None = None,
        bend: float = 0.0,
        spread: float = 0.0,
    ) -> None:
        if neurons < 1:
            raise GradguardError(f"neurons must be positive, got {neurons}")
        if scale is not None and not 0 < scale <= 1:
            raise GradguardError(f"scale must be in (0, 1], got {scale}")
        if tune not in ("row", "global"):
            raise GradguardError(f"unknown tune {tune!r}; valid: row, global")
        self.neurons, self.scale, self.tune, self.sigma = neurons, scale, tune, sigma
        self.batch_size, self.seed, self.tune_batches = batch_size, seed, tune_batches
        if signs not in ("half", "binomial"):
            raise GradguardError(f"unknown signs {signs!r}; valid: half, binomial")
        if bias not in ("zero", "honest"):
            raise GradguardError(f"unknown bias {bias!r}; valid: zero, honest")
        if sigma != "honest" and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise GradguardError(f"sigma must be positive or 'honest', got {sigma!r}")
        if honest_rows < 0 or pretrain_epochs < 0:
            raise GradguardError("honest_rows and pretrain_epochs must be >= 0")
        self.signs, self.bias, self.honest_rows = signs, bias, int(honest_rows)
        if traps is not None:
            if not 0 < int(traps) <= neurons:
                raise GradguardError(f"traps must be in [1, neurons={neurons}], got {traps}")
            # only ``traps`` of the ``neurons`` rows are traps, the others keep honest weights
            self.honest_rows += neurons - int(traps)
            self.neurons = int(traps)
        self.pretrain_epochs, self.conv_mix = int(pretrain_epochs), float(conv_mix)
        self.honest_channels = bool(honest_channels)
        if not 0 <= bend < 1:
            raise GradguardError(f"bend must be in [0, 1), got {bend}")
        self.bend = float(bend)
        if not spread >= 0:
            raise GradguardError(f"spread must be >= 0, got {spread}")
        self.spread = float(spread)

    def model_kwargs(self, model_name: str) -> dict:
        if model_name not in SUPPORTED:
            raise GradguardError(
                f"attack {self.name!r} applies to models "
                f"{', '.join(SUPPORTED)} (got {model_name!r})"
            )
        return {"width": self.neurons + self.honest_rows}

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, CuriousSecrets]:
        model = copy.deepcopy(model)
        pretrain(model, aux, self.pretrain_epochs, self.seed)
        honest_w = model.fc1.weight.detach().clone()
        target = reach_first_linear(
            model, aux.image_shape, self.conv_mix, self.honest_channels, self.bend
        )
        check_width(target, self.neurons + self.honest_rows, "neurons + honest_rows")
        g = torch.Generator().manual_seed(self.seed)
        pixels = aux.image_shape[0] * aux.image_shape[1] * aux.image_shape[2]
        sigma = float(honest_w.std()) if self.sigma == "honest" else float(self.sigma)
        pos, neg = trap_rows(self.neurons, pixels, sigma, g, self.signs)
        width = target.layer.out_features
        if self.honest_rows:
            shuffle = torch.Generator().manual_seed(self.seed + 2)
            rows = torch.randperm(width, generator=shuffle)[: self.neurons].sort().values
        else:
            rows = torch.arange(width)
        b = target.layer.bias.detach()[rows].clone() if self.bias == "honest" else None
        # Tune s on auxiliary batches the size the server expects from the client.
        n = min(len(aux), self.tune_batches * self.batch_size)
        x = pixels_to_layer(aux.x[torch.randperm(len(aux), generator=g)[:n]].flatten(1), target)
        pre_pos, pre_neg = x @ pos.T, x @ neg.T
        if b is not None:  # the bias shifts the onset: row i fires iff s_i P + b_i > N
            pre_neg = pre_neg - b
        if self.scale is not None:
            candidates = [torch.tensor(self.scale)]
        elif self.tune == "global":
            candidates = [torch.tensor(s) for s in SCALE_GRID]
        else:
            # Row i fires for x iff s_i > (neg_i . x) / (pos_i . x).
            onset = pre_neg / pre_pos.clamp_min(1e-12)
            levels = torch.tensor([lv / self.batch_size for lv in LEVEL_GRID])
            candidates = list(torch.quantile(onset, levels.clamp(max=1.0), dim=0).clamp(max=1.0))
        scores = [isolated_fraction(pre_pos, pre_neg, c, self.batch_size) for c in candidates]
        best = max(range(len(candidates)), key=scores.__getitem__)
        scale, score = candidates[best].reshape(-1, 1).expand(self.neurons, 1), scores[best]
        trap = scale * pos - neg
        with torch.no_grad():
            weight = torch.zeros(self.neurons, target.layer.in_features)
            weight[:, target.pixel_to_feature] = (
                pixels_to_weights(trap.T, target.pixel_map).T.float()
                if target.pixel_map is not None
                else trap
            )
            if self.spread:
                _spread(
                    target.layer, rows, self.spread, torch.Generator().manual_seed(self.seed + 3)
                )
            target.layer.weight[rows] = weight
            target.layer.bias[rows] = 0.0 if b is None else b
        return model, CuriousSecrets(
            f"{target.name}.weight",
            f"{target.name}.bias",
            target.pixel_to_feature,
            aux.image_shape,
            float(scale.mean()),
            score,
            trap,
            rows if self.honest_rows else None,
            target.pixel_map,
            b,
            target.bend,
            target.inner_map,
        )

    def reconstruct(self, update: Update, secrets: CuriousSecrets) -> Reconstruction:
        g = update.as_gradient()
        if secrets.weight_key not in g or secrets.bias_key not in g:
            raise GradguardError(
                f"the update has no {secrets.weight_key}: not from the trapped model"
            )
        dw, db = g[secrets.weight_key], g[secrets.bias_key]
        if secrets.rows is not None:
            dw, db = dw[secrets.rows], db[secrets.rows]
        features, rows = invert_rows(dw, db)
        pixels = features_to_pixels(features, secrets.pixel_to_feature, secrets.pixel_map)
        active = db.abs() > EMPTY_TOL * db.abs().max()
        keep = select_lone(
            pixels, rows, active, secrets.pixel_weight, update.num_examples, secrets.bias
        )
        chosen = layer_to_pixels(pixels[keep], secrets.bend, secrets.inner_map)
        images = chosen.reshape(len(keep), *secrets.image_shape)
        return Reconstruction(
            images.clamp(0, 1),
            info={
                "rows_fired": len(rows),
                "kept": len(keep),
                "scale": secrets.scale,
                "tuned_isolated_fraction": secrets.tuned_score,
            },
        )


def select_lone(
    candidates: torch.Tensor,
    rows: torch.Tensor,
    active: torch.Tensor,
    weight: torch.Tensor,
    limit: int,
    bias: torch.Tensor | None = None,
    same_db: float = 60.0,
) -> torch.Tensor:
    """Indices of at most ``limit`` candidates that are single samples, one per sample.

    Each candidate ``dW_i / db_i`` is a lone sample or a mixture. A sample that several
    rows trapped alone comes back identical from each (mixtures are weighted differently
    in every row), so repeated candidates are confirmed samples. A lone candidate is kept
    only if it is consistent with the layer: every row it would fire received a gradient,
    and no row it would fire is a row where a different confirmed sample was alone.
    """
    if len(candidates) == 0:
        return torch.zeros(0, dtype=torch.long)
    flat = candidates.double()
    clamped = flat.clamp(0, 1)
    mse = torch.cdist(clamped, clamped).pow(2) / flat.shape[1]
    same = mse <= 10 ** (-same_db / 10)
    counts = same.sum(1)
    confirmed = counts >= 2
    pre = flat @ weight.double().T  # candidates x rows
    if bias is not None:
        pre = pre + bias.double()
    margin = 1e-4 * (flat.abs() @ weight.double().abs().T)
    fires = pre > margin
    consistent = ~(fires & ~active[None, :]).any(1)
    # row -> candidate it produced, for the rows a confirmed sample had alone
    lone_row_owner = torch.full((weight.shape[0],), -1, dtype=torch.long)
    lone_row_owner[rows[confirmed]] = torch.nonzero(confirmed).flatten()
    owner = lone_row_owner[None, :].expand(len(flat), -1)
    fires_other = fires & (owner >= 0)
    other = fires_other & ~same[torch.arange(len(flat))[:, None], owner.clamp_min(0)]
    consistent &= ~other.any(1)
    stray = (flat - clamped).abs().mean(1)
    order = sorted(
        range(len(flat)), key=lambda i: (not bool(confirmed[i]), -int(counts[i]), float(stray[i]))
    )
    taken = torch.zeros(len(flat), dtype=torch.bool)
    keep = []
    for i in order:
        if taken[i] or not (confirmed[i] or consistent[i]):
            continue
        taken |= same[i]
        keep.append(i)
        if len(keep) == limit:
            break
    return torch.tensor(keep, dtype=torch.long)
