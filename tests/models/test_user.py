"""The client's own model class, imported only from its own code folder."""

import pytest
from torch import nn

from gradguard.errors import GradguardError
from gradguard.models.user import load_user_model, parse_model_args


def test_model_args_are_literals_or_strings():
    args = parse_model_args(["width=64", "channels=(16, 32)", "act=relu", "bias=False"])
    assert args == {"width": 64, "channels": (16, 32), "act": "relu", "bias": False}
    with pytest.raises(GradguardError, match="KEY=VALUE"):
        parse_model_args(["64"])


def test_class_comes_from_the_given_folder_only(tmp_path):
    pkg = tmp_path / "usermodelpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "from torch import nn\n\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self, width=4):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(3, width)\n\n"
        "def not_a_model():\n"
        "    return 1\n"
    )
    model = load_user_model("usermodelpkg.nets:Tiny", tmp_path, {"width": 7})
    assert isinstance(model, nn.Module) and model.fc.out_features == 7
    with pytest.raises(GradguardError, match="--model-path"):
        load_user_model("usermodelpkg.nets:Tiny", None, {})
    with pytest.raises(GradguardError, match="has no 'Nope'"):
        load_user_model("usermodelpkg.nets:Nope", tmp_path, {})
    with pytest.raises(GradguardError, match="not an nn.Module"):
        load_user_model("usermodelpkg.nets:not_a_model", tmp_path, {})
    # a package of that name already imported from elsewhere is refused
    with pytest.raises(GradguardError, match="already imported"):
        load_user_model("torch.nn:Linear", tmp_path, {})
    with pytest.raises(GradguardError, match="cannot import"):
        load_user_model("absent_pkg_xyz.m:C", tmp_path, {})
