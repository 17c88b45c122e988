import json

import pytest

from gradguard.cli import main
from gradguard.models.io import load_state

KEYS = {
    "attack",
    "dataset",
    "model",
    "batch_size",
    "local_steps",
    "leaked_fraction",
    "psnr_mean",
    "ssim_mean",
    "seconds",
}


def test_json_keys_save_model_and_grid(tmp_path, capsys):
    model_file = tmp_path / "m.safetensors"
    code = main(
        [
            "attack",
            "imprint",
            "--batch-size",
            "16",
            "--bins",
            "64",
            "--json",
            "--save-model",
            str(model_file),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == KEYS
    assert out["attack"] == "imprint" and out["leaked_fraction"] > 0.5
    state = load_state(model_file)
    assert tuple(state["fc1.weight"].shape) == (64, 64)
    pngs = list((tmp_path / "out").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_attack_is_one_line_error(capsys):
    assert main(["attack", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "imprint-arch" in err and "curious" in err


def test_model_the_attack_cannot_use(capsys):
    assert main(["attack", "curious", "--model", "vit-tiny"]) == 2
    err = capsys.readouterr().err
    assert "mlp, convnet" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--neurons", "--bins"])
def test_option_an_attack_lacks_is_an_error(flag, capsys):
    name = "imprint" if flag == "--neurons" else "curious"
    assert main(["attack", name, flag, "8"]) == 2
    assert "has no option" in capsys.readouterr().err


def test_generic_option_reaches_the_attack(capsys):
    code = main(
        [
            "attack",
            "imprint",
            "--batch-size",
            "8",
            "--bins",
            "64",
            "--json",
            "--option",
            "quantiles=gaussian",
            "--option",
            "measurement=random",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["leaked_fraction"] > 0.5
    assert main(["attack", "imprint", "--option", "quantiles"]) == 2


def test_saved_model_scans_with_the_printed_command(tmp_path, capsys):
    """The README's round trip: the attack says how the client's template is built, and
    ``scan`` with that command flags the model (not as a changed architecture)."""
    import shlex

    model_file = tmp_path / "trap.safetensors"
    assert main(["attack", "curious", "--neurons", "300", "--save-model", str(model_file)]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("scan it as")][0]
    argv = shlex.split(line.split(": ", 1)[1])
    assert argv[:2] == ["gradguard", "scan"] and "--width" in argv
    assert main([*argv[1:], "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and "template_hint" not in out
    assert any(f["check"] == "forensics.trap" and f["flagged"] for f in out["findings"])


def test_out_png_name_from_an_absolute_dataset_path(tmp_path, capsys):
    import matplotlib.pyplot as plt
    import numpy as np

    data = tmp_path / "nested" / "my-images"  # given as an absolute path
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(20):
            plt.imsave(data / cls / f"{i}.png", rng.random((8, 8, 3)), vmin=0, vmax=1)
    out = tmp_path / "out"
    argv = ["attack", "curious", "--dataset", str(data), "--batch-size", "8", "--out", str(out)]
    assert main(argv) == 0
    pngs = [p.relative_to(out) for p in out.rglob("*.png")]
    assert [str(p) for p in pngs] == ["curious_my-images_mlp_b8_e1.png"]


def test_inconsistency_through_the_secure_sum(capsys):
    """``gradguard attack inconsistency --clients N``: the target's images come back from
    the masked sum of every client's update; the fraction counts every client's images."""
    code = main(["attack", "inconsistency", "--clients", "3", "--batch-size", "16", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clients"] == 3 and set(out["leaked"]) == {"0"}
    assert out["aggregate_cosine_to_target"] >= 0.99
    assert out["leaked"]["0"] >= 8
    assert out["leaked_fraction"] == round(out["leaked"]["0"] / 48, 4)


def test_loki_reads_every_client_from_the_secure_sum(capsys):
    """``gradguard attack loki --clients N --local-steps E``: convnet by default, one block
    per client (``--clients`` sizes it), images of every client from the secure sum."""
    argv = ["attack", "loki", "--clients", "3", "--batch-size", "8", "--local-steps", "2"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "convnet" and out["clients"] == 3
    assert set(out["leaked"]) == {"0", "1", "2"} and min(out["leaked"].values()) >= 2
    assert out["leaked_fraction"] == round(sum(out["leaked"].values()) / 24, 4)
    assert out["leaked_fraction"] >= 0.5


def test_every_attack_takes_its_options_one_way(capsys):
    assert main(["attack", "imprint", "--batch-size", "8", "--option", "bins=64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leaked_fraction"] > 0
    assert main(["attack", "imprint", "--option", "shuffle=maybe"]) == 2
    assert "expected bool" in capsys.readouterr().err
