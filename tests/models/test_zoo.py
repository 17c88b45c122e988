"""The model zoo: every family on every input shape, stable parameter names, norm choices."""

import pytest
import torch

from gradguard.errors import GradguardError
from gradguard.models import MODELS, build_model

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


# resnet18 runs once, on CIFAR's shape, to keep the suite fast
CASES = [(n, s) for n in MODELS for s in SHAPES if n != "resnet18" or s == (3, 32, 32)]


@pytest.mark.parametrize("name, shape", CASES)
def test_forward_backward_every_shape(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    x = torch.rand(2, *shape)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_documented_parameter_names():
    names = {n: set(dict(build_model(n, (3, 32, 32), 10).named_parameters())) for n in MODELS}
    assert {"fc1.weight", "fc2.weight", "head.weight", "head.bias"} <= names["mlp"]
    assert {"conv1.weight", "conv2.weight", "fc1.weight", "head.weight"} <= names["convnet"]
    for r in ("resnet", "resnet18"):
        assert {
            "stem.conv.weight",
            "stem.norm.weight",
            "layers.0.0.conv1.weight",
            "layers.0.0.norm1.weight",
            "layers.1.0.shortcut.0.weight",
            "head.weight",
        } <= names[r]
    assert {
        "patch_embed.weight",
        "cls_token",
        "pos_embed",
        "blocks.0.norm1.weight",
        "blocks.0.attn.q.weight",
        "blocks.0.attn.k.weight",
        "blocks.0.attn.v.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.mlp.fc2.weight",
        "norm.weight",
        "head.weight",
    } <= names["vit-tiny"]
    conv = build_model("convnet", (1, 28, 28), 10)
    assert conv.conv1.stride == (1, 1) and conv.conv2.stride == (2, 2)
    assert conv.conv1.kernel_size == conv.conv2.kernel_size == (3, 3)
    assert sum(p.numel() for p in build_model("resnet18", (3, 32, 32), 10).parameters()) > 11e6


@pytest.mark.parametrize(
    "norm, kind",
    [
        ("batch", torch.nn.BatchNorm2d),
        ("group", torch.nn.GroupNorm),
        ("layer", torch.nn.GroupNorm),
        ("none", torch.nn.Identity),
    ],
)
def test_resnet_norms(norm, kind):
    model = build_model("resnet", (3, 8, 8), 10, norm=norm)
    assert isinstance(model.stem.norm, kind)
    if norm == "layer":
        assert model.stem.norm.num_groups == 1
    model.train()  # batch norm couples the samples of a batch; the others do not
    x, other = torch.rand(1, 3, 8, 8), torch.rand(3, 3, 8, 8)
    coupled = not torch.allclose(model(torch.cat([x, other]))[0], model(torch.cat([x, x]))[0])
    assert coupled == (norm == "batch")


def test_errors():
    with pytest.raises(GradguardError, match="unknown model"):
        build_model("gpt", (1, 8, 8), 10)
    with pytest.raises(GradguardError, match="unknown norm"):
        build_model("resnet", (1, 8, 8), 10, norm="instance")
    with pytest.raises(GradguardError, match="no choice of norm"):
        build_model("mlp", (1, 8, 8), 10, norm="batch")
    assert build_model("vit-tiny", (1, 8, 8), 10, norm="layer") is not None
