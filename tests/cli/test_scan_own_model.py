"""`gradguard scan --model package.module:Class`: the client's own architecture."""

import json

import pytest
import torch

from gradguard.cli import main
from gradguard.models.io import save_state

STATIC = ["--detectors", "architecture,forensics,transmit-snr,exposure", "--samples", "200"]

MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self, width=32, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.fc(self.bn(self.conv(x)).relu().flatten(1)).relu())
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The client's code folder (package ``scanclient``) and model files: honest, tampered
    (an imprint layer) and one written by another width."""
    import importlib.util

    d = tmp_path_factory.mktemp("own")
    (d / "code" / "scanclient").mkdir(parents=True)
    (d / "code" / "scanclient" / "__init__.py").write_text("")
    (d / "code" / "scanclient" / "model.py").write_text(MODEL)
    spec = importlib.util.spec_from_file_location("_scan_model", d / "code/scanclient/model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Net(width=48)
    save_state(net, d / "honest.safetensors")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc.weight"][:32] = 1.0 / state["fc.weight"].shape[1]
    state["fc.bias"][:32] = -torch.linspace(0.0, 1.0, 32)
    save_state(state, d / "imprinted.safetensors")
    save_state(mod.Net(width=16), d / "narrow.safetensors")
    return d


def own(d, name, *extra):
    return [
        "scan",
        str(d / name),
        "--model",
        "scanclient.model:Net",
        "--model-path",
        str(d / "code"),
        "--model-arg",
        "width=48",
        *STATIC,
        *extra,
    ]


def test_own_model_honest_passes_tampered_flagged(client, capsys):
    assert main(own(client, "honest.safetensors")) == 0
    capsys.readouterr()
    assert main(own(client, "imprinted.safetensors", "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert any(f["check"] == "forensics.imprint" and f["flagged"] for f in out["findings"])
    assert "template_hint" not in out  # the file fits the template: no template question


def test_a_template_mistake_is_named_beside_the_verdict(client, capsys):
    # a file of another width: the shapes differ, and the note says what may be wrong
    assert main(own(client, "narrow.safetensors", "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["verified"] and "template" in out["template_hint"]
    assert "--model-arg width=48" in out["template_hint"]
    # the zoo's mlp for the client's own file: most of it does not fit
    assert main(["scan", str(client / "honest.safetensors"), "--model", "mlp", *STATIC]) == 1
    assert "likely a template mistake" in capsys.readouterr().out


def test_own_model_is_imported_only_from_the_given_path(client, capsys):
    argv = own(client, "honest.safetensors")
    at = argv.index("--model-path")
    assert main(argv[:at] + argv[at + 2 :]) == 2  # no --model-path
    assert "--model-path" in capsys.readouterr().err
    # a module found elsewhere (here the standard library) is refused
    argv[argv.index("scanclient.model:Net")] = "json:JSONDecoder"
    assert main(argv) == 2
    assert "already imported" in capsys.readouterr().err
    argv = own(client, "honest.safetensors")
    argv[argv.index("width=48")] = "depth=3"  # an argument the class does not take
    assert main(argv) == 2
    assert "unexpected keyword" in capsys.readouterr().err


def test_unreadable_files_give_one_clean_message(client, tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n" * 50)
    assert main(["scan", str(text), "--model", "mlp", *STATIC]) == 1
    out = capsys.readouterr().out
    assert out.count("neither safetensors nor a PyTorch zip archive") == 1
    assert len(out.strip().splitlines()) == 1
    # --previous is the client's own file: a usage error naming it, not the scanned file
    honest = own(client, "honest.safetensors")
    assert main([*honest, "--previous", str(tmp_path / "missing.safetensors")]) == 2
    assert "--previous" in capsys.readouterr().err
    assert main([*honest, "--previous", str(text)]) == 2
    err = capsys.readouterr().err
    assert "--previous" in err and "notes.pt" in err


def test_a_model_of_other_data_is_a_likely_dataset_mistake(tmp_path, capsys):
    from gradguard.models import build_model

    torch.manual_seed(0)
    save_state(build_model("mlp", (1, 28, 28), 10), tmp_path / "fashion.safetensors")
    assert main(["scan", str(tmp_path / "fashion.safetensors"), "--model", "mlp", *STATIC]) == 1
    out = capsys.readouterr().out
    assert "likely a template mistake" in out and "--dataset" in out
