"""From a dense layer's input back to the image through the convolutions below it, and the
share of a batch the per-row decoder plus that inversion recovers (issue 8's fair convnet
baseline).

A row of the first linear layer that fires for one sample alone returns that sample's
layer input exactly (``dW_i / db_i``, seed 000 A.1.1). On an mlp that input is the image;
on a convnet it is a feature map, which the convolutions compute injectively from the
image. Gauss-Newton with the received model's own Jacobian,
``x <- clamp(x + (J^T J + eps)^-1 J^T (f - f(x)), 0, 1)``, inverts it (the honest digits
convnet: 143-147 dB, benchmarks/results/convnet_inversion_digits.md), so the decoder that
only reads images off an mlp undercounts what an honest convnet's update gives away.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jacfwd, vmap

from gradguard.attacks.inversion.analytic import invert_rows
from gradguard.detect.layers import linears
from gradguard.detect.readout import _features
from gradguard.fl import LocalTraining, local_update
from gradguard.metrics import match

#: Gauss-Newton steps (the honest digits convnet converges to > 140 dB within them).
ITERATIONS = 15
#: Damping of ``J^T J``, relative to its mean diagonal.
DAMPING = 1e-6
#: Memory for the Jacobians solved at once (float64).
JACOBIAN_BYTES = 2**28


def layer_jacobians(
    model: nn.Module, state: Mapping[str, torch.Tensor], layer: str, images: torch.Tensor
) -> torch.Tensor:
    """``d input-of-layer / d pixels`` at each image (images x features x pixels), by
    forward-mode differentiation batched over the images (torch.func)."""
    params = {k: v.detach() for k, v in state.items()}
    shape = images.shape[1:]

    def features(flat: torch.Tensor) -> torch.Tensor:
        return _features(model, params, layer, flat.reshape(1, *shape))[0]

    return vmap(jacfwd(features))(images.flatten(1))


def gauss_newton(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    layer: str,
    targets: torch.Tensor,
    start: torch.Tensor,
    iterations: int = ITERATIONS,
) -> torch.Tensor:
    """Images in [0, 1] whose ``layer`` inputs are ``targets`` (one per row), all started
    at the image ``start``, solved ``JACOBIAN_BYTES`` of Jacobians at a time."""
    per_image = targets.shape[1] * start.numel() * 8
    chunk = max(1, JACOBIAN_BYTES // per_image)
    return (
        torch.cat(
            [
                _gauss_newton(model, state, layer, targets[i : i + chunk], start, iterations)
                for i in range(0, len(targets), chunk)
            ]
        )
        if len(targets)
        else start.new_zeros(0, *start.shape)
    )


def _gauss_newton(model, state, layer, targets, start, iterations):
    shape = start.shape
    x = start.flatten().double().expand(len(targets), -1).clone()
    targets = targets.double()
    for _ in range(iterations):
        batch = x.float().reshape(len(x), *shape)
        with torch.no_grad():
            now = _features(model, state, layer, batch).double()
        j = layer_jacobians(model, state, layer, batch).double()
        normal = j.transpose(1, 2) @ j
        scale = normal.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        eye = torch.eye(normal.shape[-1], dtype=normal.dtype)
        rhs = (j.transpose(1, 2) @ (targets - now)[..., None])[..., 0]
        step = torch.linalg.solve(normal + DAMPING * scale[:, None, None] * eye, rhs)
        x = (x + step).clamp(0, 1)
    return x.float().reshape(len(x), *shape)


@dataclass(frozen=True)
class RowsExposure:
    """What the per-row decoder plus inversion recovers from one FedSGD update."""

    leaked: int  # matched images at >= the threshold
    batch: int
    candidates: int  # rows decoded (non-empty bias gradient)
    inverted: int  # candidates inverted to images (all of them on an mlp)

    @property
    def share(self) -> float:
        return self.leaked / max(1, self.batch)


class FixedBatch:
    """The minimal Dataset view ``local_update`` needs for one fixed batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)


def rows_exposure(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    threshold_db: float = 30.0,
    every_row: bool = False,
    iterations: int = ITERATIONS,
) -> RowsExposure:
    """Share of the batch ``images`` the per-row decoder ``dW_i / db_i`` recovers from
    ``model``'s FedSGD update on its first linear layer, each decoded layer input inverted
    to an image (:func:`gauss_newton` from the batch mean) where that layer does not read
    the image, clamped to the images' range [0, 1] and Hungarian-matched to the batch
    (>= ``threshold_db``).

    With ``every_row`` every decoded row is inverted: what an attacker who inverts all rows
    and keeps the best gets. By default, for speed, only one candidate per sample is: the
    row whose decoded input is nearest (relative L2) to that sample's true layer input, a
    choice made with the ground truth. It counts at most one image per sample, as the
    matching does, and equals the every-row count whenever the nearest candidate is the one
    that inverts best (a row is exact only for a lone sample, and then it is the nearest);
    on the honest digits convnet at batch 64 both give the same count
    (benchmarks/results/convnet_inversion_digits.md). Starting from the batch mean is
    itself a little knowledge of the batch: read the share as the attacker's best case.
    """
    model = copy.deepcopy(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    name = linears(model)[0]
    layer = model.get_submodule(name)
    batch = len(images)
    update = local_update(
        model,
        FixedBatch(images, labels),
        LocalTraining(batch_size=batch, fedsgd=True),
        torch.Generator().manual_seed(0),
    )
    g = update.as_gradient()
    bias = g.get(f"{name}.bias")
    if bias is None:
        return RowsExposure(0, batch, 0, 0)
    candidates, _ = invert_rows(g[f"{name}.weight"], bias)
    if len(candidates) == 0:
        return RowsExposure(0, batch, 0, 0)
    if layer.in_features == math.prod(images.shape[1:]):
        recon = candidates.reshape(len(candidates), *images.shape[1:]).clamp(0, 1)
        return RowsExposure(match(images, recon).leaked(threshold_db), batch, len(candidates), 0)
    decoded = len(candidates)
    if not every_row:
        with torch.no_grad():
            truth = _features(model, state, name, images).double()
        dist = torch.cdist(truth, candidates.double()) / truth.norm(dim=1, keepdim=True).clamp_min(
            1e-12
        )
        candidates = candidates[dist.argmin(1).unique()]
    recon = gauss_newton(model, state, name, candidates, images.mean(0), iterations)
    leaked = match(images, recon).leaked(threshold_db)
    return RowsExposure(leaked, batch, decoded, len(candidates))
