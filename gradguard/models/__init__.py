"""The model zoo, by name, shaped by the data set (channels, size, classes).

Parameter names are stable; attacks and detectors address layers through them:

- ``mlp``: ``fc1`` (first linear), ``fc2``, ``head`` (last linear).
- ``convnet``: ``conv1`` (3x3, stride 1), ``conv2`` (3x3, stride 2), ``fc1``, ``head``.
- ``resnet`` / ``resnet18``: ``stem.conv``, ``stem.norm``, ``layers.{i}.{j}.conv1/norm1/
  conv2/norm2[/shortcut.0/shortcut.1]``, ``head``.
- ``vit-tiny``: ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.{i}.norm1``,
  ``blocks.{i}.attn.q/k/v/proj``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1/fc2``,
  ``norm``, ``head``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gradguard.errors import GradguardError
from gradguard.models.convnet import ConvNet
from gradguard.models.mlp import MLP
from gradguard.models.resnet import ResNet
from gradguard.models.vit import ViT

NORMS = ("batch", "group", "layer", "none")

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "convnet": ConvNet,
    "resnet": lambda shape, classes, **kw: ResNet(
        shape, classes, widths=(16, 32, 64), blocks=(1, 1, 1), **kw
    ),
    "resnet18": lambda shape, classes, **kw: ResNet(
        shape, classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), **kw
    ),
    "vit-tiny": ViT,
}
_HAS_NORM = {"resnet", "resnet18"}

MODELS = tuple(_BUILDERS)


def build_model(
    name: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    norm: str | None = None,
    **kwargs,
) -> nn.Module:
    """A fresh model ``name`` for images of ``image_shape`` (C, H, W) and ``num_classes``.

    ``norm`` (``batch``, ``group``, ``layer`` or ``none``) applies to families with norms
    (``resnet``, ``resnet18``; default ``batch``); ``vit-tiny`` always uses layer norm.
    """
    if name not in _BUILDERS:
        raise GradguardError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    if name in _HAS_NORM:
        norm = norm or "batch"
        if norm not in NORMS:
            raise GradguardError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        kwargs["norm"] = norm
    elif norm not in (None, "none") and not (name == "vit-tiny" and norm == "layer"):
        raise GradguardError(f"model {name!r} has no choice of norm (got --norm {norm})")
    return _BUILDERS[name](tuple(image_shape), num_classes, **kwargs)


__all__ = ["MODELS", "NORMS", "build_model", "MLP", "ConvNet", "ResNet", "ViT"]
