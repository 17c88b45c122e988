"""Layer lookup by module type, input side first, from the model or its named modules."""

from gradguard.detect.layers import attentions, batchnorms, convs, linears, weight_layers
from gradguard.models import build_model


def test_layers_are_found_input_side_first():
    convnet = build_model("convnet", (1, 8, 8), 10)
    assert (convs(convnet), linears(convnet)) == (["conv1", "conv2"], ["fc1", "head"])
    assert weight_layers(dict(convnet.named_modules())) == ["conv1", "conv2", "fc1", "head"]
    assert batchnorms(convnet) == attentions(convnet) == []
    resnet = build_model("resnet", (1, 8, 8), 10, norm="batch")
    assert batchnorms(resnet)[:2] == ["stem.norm", "layers.0.0.norm1"]
    assert convs(resnet)[0] == "stem.conv" and linears(resnet) == ["head"]
    vit = build_model("vit-tiny", (1, 8, 8), 10)
    assert attentions(vit) == [f"blocks.{i}.attn" for i in range(4)]
    assert convs(vit) == ["patch_embed"] and linears(vit)[-1] == "head"
