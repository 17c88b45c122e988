"""Where the layers attacks target live in a template model (seed 000, appendix A.1).

Layers are found by module type in registration order, which for the zoo is also the
order of the forward pass: the first linear layer is the one closest to the input. Each
function takes the model or its ``dict(model.named_modules())`` (one walk, several lookups).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

Modules = nn.Module | Mapping[str, nn.Module]


def _named(model: Modules) -> Iterable[tuple[str, nn.Module]]:
    return model.named_modules() if isinstance(model, nn.Module) else model.items()


def linears(model: Modules) -> list[str]:
    return [n for n, m in _named(model) if isinstance(m, nn.Linear)]


def convs(model: Modules) -> list[str]:
    return [n for n, m in _named(model) if isinstance(m, nn.Conv2d)]


def batchnorms(model: Modules) -> list[str]:
    return [n for n, m in _named(model) if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def attentions(model: Modules) -> list[str]:
    """Attention modules: PyTorch's ``nn.MultiheadAttention`` (inside
    ``nn.TransformerEncoderLayer`` too) and modules with separate ``q``, ``k``, ``v`` linear
    projections (``vit-tiny``)."""
    return [
        n
        for n, m in _named(model)
        if isinstance(m, nn.MultiheadAttention)
        or all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q", "k", "v"))
    ]


def attention_parameters(name: str, module: nn.Module) -> tuple[list[str], list[str]]:
    """The weight and bias entries of attention module ``name``: query, key, value and
    output projections, packed (``in_proj_weight``) or not."""
    prefix = f"{name}." if name else ""
    if isinstance(module, nn.MultiheadAttention):
        own = dict(module.named_parameters())
        weights = ["in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"]
        weights = [w for w in weights if own.get(w) is not None] + ["out_proj.weight"]
        biases = [b for b in ("in_proj_bias", "out_proj.bias") if own.get(b) is not None]
        return [prefix + w for w in weights], [prefix + b for b in biases]
    parts = [p for p in ("q", "k", "v", "proj") if isinstance(getattr(module, p, None), nn.Linear)]
    return [f"{prefix}{p}.weight" for p in parts], [
        f"{prefix}{p}.bias" for p in parts if getattr(module, p).bias is not None
    ]


def weight_layers(model: Modules) -> list[str]:
    """Every convolution and linear layer (the layers D-SNR inspects)."""
    return [n for n, m in _named(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
