"""How well the client's own images come back, linearly, from the input of the first dense
layer above a convolution (issue 8: trap rows behind a pass-through).

A unit of a linear layer that fires for one sample alone returns that sample's layer input
exactly (``dW_i / db_i``, seed 000 A.1.1). On an ``mlp`` that input is the image. Behind
convolutions it is a feature map, and an image leak only when a fixed decoder turns it
back into the image: the trap attacks (Boenisch et al.) make the convolutions a
pass-through (identity or blurred kernels, seed 000 A.1.2) whose inverse is that decoder.

The client reads the decoder off the received model itself: the Jacobian ``J`` of the
feature map at the mean of some of its images, restricted to the features it predicts on
those images (the feature's deviation from the mean explained by ``J`` to within
``LINEAR_RESIDUAL`` of its size), and the ridge inverse of that linear map applied to
other images' features. A pass-through is linear on images (its ReLUs pass non-negative
inputs), so the readout returns them to the precision of its blur; honest feature maps are
linear nowhere on the data and the readout returns nothing. The PSNR is per image, in the
images' own value range, as every decoder of the audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

#: A feature counts as linear on the client's images when the Jacobian at their mean
#: explains its deviation from the mean to within this fraction (RMS over the images).
LINEAR_RESIDUAL = 0.1
#: Ridge strength of the inverse, relative to the mean diagonal of ``J^T J``.
RIDGE = 1e-9
#: Input directions pushed through the model at once for the Jacobian.
CHUNK = 256


@dataclass(frozen=True)
class Readout:
    """Per image read back, the PSNR of the linear readout from ``layer``'s input."""

    layer: str
    db: torch.Tensor  # (images,)
    linear: int  # features linear on the client's images
    features: int

    @property
    def median(self) -> float:
        return float(self.db.median())

    def share(self, psnr_db: float) -> float:
        return float((self.db >= psnr_db).float().mean())


class _Stop(Exception):
    """Raised by the hook once the dense layer's input is seen (nothing above it runs)."""


def dense_input_map(
    model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor
) -> tuple[str, torch.Tensor] | None:
    """The first linear layer fed by a convolution's flattened feature map, and that map
    as the layer sees it (N x features); ``None`` when the first linear layer called reads
    anything else (the image itself: the audit's decoders read it directly)."""
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, _out, n=n: calls.append((n, mod, inp[0])))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            _features(model, state, None, x[:1])
    finally:
        for h in hooks:
            h.remove()
    seen_conv = False
    for name, mod, inp in calls:
        if isinstance(mod, nn.Conv2d):
            seen_conv = True
        elif isinstance(mod, nn.Linear):
            if not (seen_conv and inp.dim() == 2):
                return None
            with torch.no_grad():
                return name, _features(model, state, name, x)
    return None


def _features(
    model: nn.Module, state: Mapping[str, torch.Tensor], layer: str | None, x: torch.Tensor
) -> torch.Tensor:
    """The input of ``layer`` on ``x`` (evaluation mode; the model stops there), or the
    model's output when ``layer`` is None."""
    seen: list[torch.Tensor] = []

    def stop(_m, inp):
        seen.append(inp[0])
        raise _Stop

    hook = model.get_submodule(layer).register_forward_pre_hook(stop) if layer else None
    was_training = model.training
    model.eval()
    try:
        out = functional_call(model, dict(state), (x,))
    except _Stop:
        out = seen[0]
    finally:
        model.train(was_training)
        if hook is not None:
            hook.remove()
    return out.flatten(1)


def jacobian(
    model: nn.Module, state: Mapping[str, torch.Tensor], layer: str, at: torch.Tensor
) -> torch.Tensor:
    """``d features / d pixels`` of ``layer``'s input at the image ``at`` (features x
    pixels), by forward-mode products with the pixel basis, ``CHUNK`` at a time."""
    params = {k: v.detach() for k, v in state.items()}
    pixels = at.numel()

    def push(direction: torch.Tensor) -> torch.Tensor:
        return jvp(
            lambda v: _features(model, params, layer, v.reshape(1, *at.shape))[0],
            (at.flatten(),),
            (direction,),
        )[1]

    basis = torch.eye(pixels, dtype=at.dtype)
    cols = [vmap(push)(basis[i : i + CHUNK]) for i in range(0, pixels, CHUNK)]
    return torch.cat(cols).T


def image_readout(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    fit: torch.Tensor,
    test: torch.Tensor,
) -> Readout | None:
    """The linear readout of ``model``'s first dense layer above a convolution, found on
    the images ``fit`` and scored (PSNR per image) on ``test``; None where no dense layer
    reads a feature map."""
    found = dense_input_map(model, state, fit[:1])
    if found is None or len(fit) < 2 or len(test) == 0:
        return None
    layer = found[0]
    with torch.no_grad():
        f_fit = _features(model, state, layer, fit).double()
        f_test = _features(model, state, layer, test).double()
        center = fit.mean(0)
        f_center = _features(model, state, layer, center[None]).double()[0]
    jac = jacobian(model, state, layer, center).double()
    dx_fit = (fit - center).flatten(1).double()
    dev = f_fit - f_center
    residual = (dev - dx_fit @ jac.T).norm(dim=0)
    size = dev.norm(dim=0)
    linear = (residual <= LINEAR_RESIDUAL * size) & (size > 0) & (jac.abs().sum(1) > 0)
    j = jac[linear]
    normal = j.T @ j
    scale = float(normal.diagonal().mean()) if len(j) else 0.0
    span = float(torch.cat([fit, test]).max() - torch.cat([fit, test]).min()) or 1.0
    pixels = test.flatten(1).double()
    if scale > 0:
        eye = torch.eye(len(normal), dtype=normal.dtype)
        dev_test = (f_test - f_center)[:, linear]
        delta = torch.linalg.solve(normal + RIDGE * scale * eye, j.T @ dev_test.T)
        guess = center.flatten().double() + delta.T
    else:
        guess = center.flatten().double().expand_as(pixels)
    mse = (guess - pixels).pow(2).mean(1)
    db = 10 * torch.log10(span**2 / mse.clamp_min(1e-20 * span**2)).float()
    return Readout(layer, db, int(linear.sum()), len(linear))
