import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gradguard.attacks import get_attack
from gradguard.attacks.server.seer import SeerConfig, SeerParts, build_seer_model, load_seer
from gradguard.cli import main
from gradguard.data import train_test
from gradguard.errors import ModelFileError
from gradguard.experiments.seer import client_update, evaluate_parts, mean_property_image
from gradguard.metrics import psnr

CFG = SeerConfig(norm="batch", batch_size=16)


@pytest.fixture(scope="module")
def parts():
    return load_seer(CFG)


def test_committed_weights_load_and_beat_the_constant_guess(parts):
    aux, held_out = train_test("digits")
    scores = evaluate_parts(parts, held_out, aux, n_batches=24, seed=7)
    assert scores["psnr_mean"] >= scores["baseline_psnr"] + 3.0
    assert scores["identified_fraction"] >= 0.5


def test_through_the_attack_protocol_the_brightest_image_comes_back(parts):
    aux, held_out = train_test("digits")
    attack = get_attack("seer", norm="batch", batch_size=16)
    model, secrets = attack.manipulate(build_seer_model("batch"), aux)
    guess = mean_property_image(aux, 16, "brightest")
    g = torch.Generator().manual_seed(3)
    stolen, constant = [], []
    for i in range(8):
        batch = held_out.subset(torch.randperm(len(held_out), generator=g)[:16])
        target = batch.x[batch.x.flatten(1).mean(1).argmax()][None]
        image = attack.reconstruct(client_update(model, batch, seed=i), secrets).images
        stolen.append(float(psnr(image, target)[0]))
        constant.append(float(psnr(guess[None], target)[0]))
    assert sum(stolen) / 8 > sum(constant) / 8 + 3.0


def test_hostile_weights_file_is_refused_with_one_message(tmp_path):
    state = load_file(str(CFG.weights_file))
    name = next(k for k in state if k.startswith("decoder."))
    bad = dict(state)
    bad[name] = torch.full_like(state[name], float("nan"))
    save_file(bad, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ModelFileError, match="non-finite"):
        SeerParts(CFG).load_weights(tmp_path / "nan.safetensors")
    bad = dict(state)
    bad[name] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ModelFileError, match="shape"):
        SeerParts(CFG).load_weights(tmp_path / "shape.safetensors")


def test_cli_json(capsys):
    code = main(
        ["attack", "seer", "--norm", "batch", "--batch-size", "16", "--json"]
        + ["--option", "n_batches=4"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"psnr_mean", "identified_fraction", "baseline_psnr", "n_batches"} <= set(out)
    assert out["n_batches"] == 4


def test_batch_64_weights_beat_the_constant_guess():
    parts = load_seer(SeerConfig(norm="batch", batch_size=64))
    aux, held_out = train_test("digits")
    scores = evaluate_parts(parts, held_out, aux, n_batches=16, seed=7)
    assert scores["psnr_mean"] >= scores["baseline_psnr"] + 2.0
    assert scores["identified_fraction"] >= 0.4
