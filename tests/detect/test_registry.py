"""The registry: every registered detector passes honest trained models, and a new detector
with its own thresholds is one file (tests/detect/toy_detector.py) plus one registry line:
GuardConfig, ``gradguard scan --threshold`` and calibration pick it up with no other edit."""

import json
from pathlib import Path

import pytest
import torch

from gradguard.cli import main
from gradguard.detect import DETECTORS, Guard, GuardConfig, get_detector
from gradguard.detect.base import Context
from gradguard.detect.calibrate import calibration_detectors, propose, score_model
from gradguard.detect.thresholds import DEFAULTS, ConfigError
from gradguard.errors import GradguardError
from gradguard.models import build_model
from gradguard.models.io import save_state


def verdict(detector, model, template, local):
    return get_detector(detector).inspect(model.state_dict(), Context(template, local))


@pytest.mark.parametrize("name", ["mlp", "convnet", "resnet", "vit"])
def test_honest_trained_models_pass_every_detector(honest, digits, name):
    _, local, _ = digits
    for det in ("architecture", "forensics", "transmit-snr", "dsnr", "warmup+"):
        v = verdict(det, honest[name], honest[name], local)
        assert not v.malicious and v.verified, (det, v.summary())
        assert v.score < 1


def test_an_unknown_detector_is_an_error():
    with pytest.raises(GradguardError, match="unknown detector 'nope'"):
        get_detector("nope")


@pytest.fixture
def toy(monkeypatch):
    """The toy detector registered with one line, as a new detector would be."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setitem(DETECTORS, "toy-norm", "toy_detector:NormRatio")
    return "toy-norm"


@pytest.fixture
def mlp_files(tmp_path):
    torch.manual_seed(0)
    m = build_model("mlp", (1, 8, 8), 10)
    save_state(m, tmp_path / "honest.safetensors")
    save_state({k: 10 * v for k, v in m.state_dict().items()}, tmp_path / "scaled.safetensors")
    return m, tmp_path


def test_a_new_detectors_threshold_is_a_default_and_configurable(toy, mlp_files):
    model, _ = mlp_files
    assert DEFAULTS["toy-norm.ratio"] == 50.0
    with pytest.raises(ConfigError, match="disarm"):
        GuardConfig(detectors=(toy,), thresholds={"toy-norm.ratio": 1e9})
    with pytest.raises(ConfigError, match="unknown threshold"):
        GuardConfig(thresholds={"toy-norm.nope": 1.0})
    scaled = {k: 10 * v for k, v in model.state_dict().items()}
    default = Guard(GuardConfig(detectors=(toy,)), template=model)
    assert not default.check(scaled).malicious  # 10x is under the default 50x
    strict = Guard(GuardConfig(detectors=(toy,), thresholds={"toy-norm.ratio": 2.0}), model)
    v = strict.check(scaled)
    assert v.malicious and v.verified and v.findings[-1].check == "toy-norm.ratio"
    assert not strict.check(model.state_dict()).malicious


def test_scan_takes_a_new_detector_and_its_threshold(toy, mlp_files, capsys):
    _, d = mlp_files
    scan = ["--model", "mlp", "--detectors", toy, "--samples", "64", "--json"]
    lowered = ["--threshold", "toy-norm.ratio=2"]
    assert main(["scan", str(d / "scaled.safetensors"), *scan]) == 0
    capsys.readouterr()
    assert main(["scan", str(d / "scaled.safetensors"), *scan, *lowered]) == 1
    out = json.loads(capsys.readouterr().out)
    assert any(f["check"] == "toy-norm.ratio" and f["flagged"] for f in out["findings"])
    assert main(["scan", str(d / "honest.safetensors"), *scan, *lowered]) == 0
    assert main(["scan", str(d / "honest.safetensors"), *scan, "--threshold", "toy-norm.x=2"]) == 2


def test_calibration_maps_a_new_detectors_findings_to_its_key(toy, mlp_files):
    model, _ = mlp_files
    detectors, marks = calibration_detectors()
    assert toy in [d.name for d in detectors] and "toy-norm.ratio" in marks
    scaled = {k: 3 * v for k, v in model.state_dict().items()}
    s = score_model(scaled, Context(model), [d for d in detectors if d.name == toy], marks)
    assert not s.unmapped and not s.flagged
    assert s.values["toy-norm.ratio"] == pytest.approx(3.0)
    assert propose(s.values)["toy-norm.ratio"] == pytest.approx(6.0)  # 2 x honest max
    assert propose({"toy-norm.ratio": 0.5})["toy-norm.ratio"] == 1.5  # the declared floor
