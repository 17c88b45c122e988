"""Route the input image unchanged to a model's first linear layer (seed 000, A.1.2).

``mlp``: ``fc1`` sees the flattened image already. ``convnet``: ``conv1`` gets Dirac
kernels (output channel ``c`` copies input channel ``c``) and the stride-2 ``conv2`` gets
four shifted Diracs per input channel (output channel ``4c + 2dy + dx`` copies pixel
``(2i + dy, 2j + dx)`` to position ``(i, j)``), a lossless space-to-depth map; the ReLUs
pass the non-negative image through, so ``fc1`` sees a known permutation of the pixels.
This is the identity-convolution trick of Boenisch et al. for CNNs.

Disguise ``mix > 0``: every pass-through kernel keeps ``1 - mix`` of its weight on its
Dirac tap and spreads ``mix`` over the 3x3 neighbourhood (non-negative, so ReLUs still pass
a non-negative image), which brings each filter's transmit ratio (largest entry over the
sum of the others) below 1 from ``mix`` about 0.6. The composite map pixels -> ``fc1``
inputs is then an invertible blur, not a permutation: :class:`LinearTarget` carries it
(``pixel_map``), attacks write their rows through its inverse and decoders undo it.
``honest_channels``: the channels the pass-through does not use keep the model's own
(honest or trained) weights and biases.

Disguise ``bend > 0`` (against a linear readout of the images, detect/readout.py): a second
``conv1`` channel per image channel carries ``ReLU(u - KNOT)`` of the same (blurred) pixel
``u`` and ``conv2`` adds ``1 - bend`` of the first to ``bend`` of the second, so ``fc1``
sees ``bent(u) = (1 - bend) u + bend ReLU(u - KNOT)``, blurred: a per-pixel piecewise-linear
bijection that the decoder undoes (:func:`layer_to_pixels`) and no linear map does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradguard.errors import GradguardError
from gradguard.models import MLP, ConvNet

#: Model families whose first linear layer can be reached without changing the architecture.
SUPPORTED = ("mlp", "convnet")
#: Where ``bend`` turns the pass-through's slope from ``1 - bend`` to 1 (pixels in [0, 1]).
KNOT = 0.25


@dataclass(frozen=True)
class LinearTarget:
    """The first linear layer the attack rewrites and how pixels reach it.

    ``pixel_to_feature[p]`` is the column of ``layer`` that pixel ``p`` of the flattened
    (C, H, W) image lands in; ``downstream`` is the next linear layer (its weight columns
    decide each neuron's backpropagated gradient).
    """

    name: str
    layer: nn.Linear
    downstream_name: str
    downstream: nn.Linear
    pixel_to_feature: torch.Tensor
    image_shape: tuple[int, int, int]
    # inputs at ``pixel_to_feature`` = flattened pixels @ pixel_map; None: the identity
    pixel_map: torch.Tensor | None = None
    # ``bend > 0``: inputs = bent(pixels @ inner_map) @ pixel_map (pixel_map: conv2 alone)
    bend: float = 0.0
    inner_map: torch.Tensor | None = None


def reach_first_linear(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    mix: float = 0.0,
    honest_channels: bool = False,
    bend: float = 0.0,
) -> LinearTarget:
    """Make ``model`` (modified in place) pass the image to its first linear layer."""
    c, h, w = image_shape
    n = c * h * w
    if not 0 <= mix < 1:
        raise GradguardError(f"conv_mix must be in [0, 1), got {mix}")
    if not 0 <= bend < 1:
        raise GradguardError(f"bend must be in [0, 1), got {bend}")
    if isinstance(model, MLP):
        if bend:
            raise GradguardError("bend needs convolutions before the first linear layer")
        return LinearTarget("fc1", model.fc1, "fc2", model.fc2, torch.arange(n), image_shape)
    if isinstance(model, ConvNet):
        features = _identity_convs(model, image_shape, mix, honest_channels, bend)
        if bend:
            inner, outer = _bent_maps(model, image_shape, features)
            return LinearTarget(
                "fc1", model.fc1, "head", model.head, features, image_shape, outer, bend, inner
            )
        pixel_map = _pixel_map(model, image_shape, features) if mix > 0 else None
        return LinearTarget("fc1", model.fc1, "head", model.head, features, image_shape, pixel_map)
    raise GradguardError(
        f"this attack rewrites the first linear layer of {', '.join(SUPPORTED)} "
        f"models only; got {type(model).__name__} (use imprint-arch for any model)"
    )


@torch.no_grad()
def _identity_convs(
    model: ConvNet,
    image_shape: tuple[int, int, int],
    mix: float = 0.0,
    honest: bool = False,
    bend: float = 0.0,
) -> torch.Tensor:
    c, h, w = image_shape
    c1, c2 = model.conv1.out_channels, model.conv2.out_channels
    used = 2 * c if bend else c
    if c1 < used or c2 < 4 * c:
        raise GradguardError(
            f"convnet channels ({c1}, {c2}) too few to pass {c} image channels "
            f"through (need at least ({used}, {4 * c}))"
        )
    # ``honest``: only the pass-through channels are rewritten; the others keep the model's
    # weights (the pass-through outputs read nothing from them).
    kept1, kept2 = (slice(0, used), slice(0, 4 * c)) if honest else (slice(None), slice(None))
    model.conv1.weight[kept1] = 0.0
    model.conv1.bias[kept1] = 0.0
    model.conv2.weight[kept2] = 0.0
    model.conv2.bias[kept2] = 0.0
    blur = torch.full((3, 3), mix / 9)
    for ch in range(c):
        model.conv1.weight[ch, ch] += blur
        model.conv1.weight[ch, ch, 1, 1] += 1.0 - mix
        if bend:  # the same pixel, less KNOT, through its own ReLU
            model.conv1.weight[c + ch, ch] = model.conv1.weight[ch, ch]
            model.conv1.bias[c + ch] = -KNOT
        for dy in (0, 1):
            for dx in (0, 1):
                out = 4 * ch + 2 * dy + dx
                model.conv2.weight[out, ch] += blur
                model.conv2.weight[out, ch, 1 + dy, 1 + dx] += 1.0 - mix
                if bend:
                    model.conv2.weight[out, c + ch] = bend * model.conv2.weight[out, ch]
                    model.conv2.weight[out, ch] *= 1.0 - bend
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    ch, y, x = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    feature = ((4 * ch + 2 * (y % 2) + (x % 2)) * h2 + y // 2) * w2 + x // 2
    return feature.flatten()


@torch.no_grad()
def _pixel_map(
    model: ConvNet, image_shape: tuple[int, int, int], features: torch.Tensor
) -> torch.Tensor:
    """The (pixels x pixels) matrix taking a flattened image to ``fc1``'s inputs at
    ``features``: the two convolutions applied to every basis image (they are linear on
    non-negative images, where the ReLUs pass everything)."""
    n = features.numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *image_shape)
    conv1, conv2 = model.conv1.double(), model.conv2.double()
    try:
        zero = torch.zeros(1, *image_shape, dtype=torch.float64)
        out = (conv2(conv1(basis)) - conv2(conv1(zero))).flatten(1)[:, features]
    finally:
        model.conv1.float(), model.conv2.float()
    return out


@torch.no_grad()
def _bent_maps(
    model: ConvNet, image_shape: tuple[int, int, int], features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``bend``: the (pixels x pixels) maps of ``conv1`` (pixels to the pass-through
    channels, before the bend) and of ``conv2`` (bent values, fed to both of a pixel's
    channels, to ``fc1``'s inputs at ``features``)."""
    c = image_shape[0]
    n = features.numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *image_shape)
    conv1, conv2 = model.conv1.double(), model.conv2.double()
    try:
        inner = (conv1(basis) - conv1(basis[:1] * 0))[:, :c].flatten(1)
        both = torch.zeros(n, conv1.out_channels, *image_shape[1:], dtype=torch.float64)
        both[:, :c] = basis
        both[:, c : 2 * c] = basis
        outer = (conv2(both) - conv2(both[:1] * 0)).flatten(1)[:, features]
    finally:
        model.conv1.float(), model.conv2.float()
    return inner, outer


def bent(u: torch.Tensor, bend: float) -> torch.Tensor:
    """The pass-through's per-pixel bijection: slope ``1 - bend`` below ``KNOT``, 1 above."""
    return (1 - bend) * u + bend * (u - KNOT).clamp_min(0)


def unbent(v: torch.Tensor, bend: float) -> torch.Tensor:
    """The inverse of :func:`bent`."""
    return torch.where(v <= (1 - bend) * KNOT, v / (1 - bend), v + bend * KNOT)


def pixels_to_layer(pixels: torch.Tensor, target: LinearTarget) -> torch.Tensor:
    """Flattened pixels (N x P) as the values the rows written through ``pixel_map`` act on:
    the pixels themselves, or with ``bend`` the bent ``conv1`` outputs."""
    if not target.bend or target.inner_map is None:
        return pixels
    return bent(pixels.double() @ target.inner_map, target.bend).to(pixels.dtype)


def layer_to_pixels(
    values: torch.Tensor, bend: float, inner_map: torch.Tensor | None
) -> torch.Tensor:
    """The inverse of :func:`pixels_to_layer` (``values`` from :func:`features_to_pixels`)."""
    if not bend or inner_map is None:
        return values
    u = unbent(values.double(), bend)
    return torch.linalg.solve(inner_map, u, left=False).to(values.dtype)


def pixels_to_weights(a: torch.Tensor, pixel_map: torch.Tensor | None) -> torch.Tensor:
    """Weights on the passed-through inputs that compute ``a . pixels`` (``a``: pixels, or
    pixels x rows for several functionals at once)."""
    if pixel_map is None:
        return a.double()
    column = a.double().reshape(len(a), -1)
    return torch.linalg.solve(pixel_map.double(), column).reshape(a.shape)


def features_to_pixels(
    features: torch.Tensor, pixel_to_feature: torch.Tensor, pixel_map: torch.Tensor | None
) -> torch.Tensor:
    """Recovered first-layer inputs (N x F) back to flattened pixels (N x P)."""
    f = features[:, pixel_to_feature].double()
    if pixel_map is None:
        return f.float()
    return torch.linalg.solve(pixel_map.double(), f, left=False).float()


def features_to_images(features: torch.Tensor, target: LinearTarget) -> torch.Tensor:
    """Undo the pass-through: first-layer inputs (N x F) back to images (N x C x H x W)."""
    return features[:, target.pixel_to_feature].reshape(len(features), *target.image_shape)


def check_width(target: LinearTarget, width: int, option: str) -> None:
    if target.layer.out_features != width:
        raise GradguardError(
            f"the model's {target.name} has {target.layer.out_features} units but the attack "
            f"wants {option}={width}: build the model with width={width}"
        )
