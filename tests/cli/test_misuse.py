"""Every CLI misuse: one line on stderr, exit status 2, before any work starts."""

import pytest

from gradguard.cli import main

FILE = "m.safetensors"


@pytest.fixture
def blocked(tmp_path):
    """A path that cannot be written: its parent is a regular file (root ignores chmod)."""
    f = tmp_path / "a-file"
    f.write_text("x")
    return f / "sub"


def _cases(tmp_path, blocked):
    model = tmp_path / FILE
    model.write_bytes(b"\0" * 16)
    return [
        ["attack", "imprint", "--save-model", str(tmp_path)],
        ["attack", "imprint", "--save-model", str(blocked / "m.safetensors")],
        ["attack", "imprint", "--option", "bins=abc"],
        ["attack", "imprint", "--option", "bins=-3"],
        ["attack", "imprint", "--option", "nope=1"],
        ["attack", "imprint", "--option", "=1"],
        ["attack", "imprint", "--out", str(blocked)],
        ["attack", "imprint", "--batch-size", "0"],
        ["attack", "imprint", "--bins", "1000000000"],
        ["attack", "imprint", "--lr", "nan"],
        ["attack", "nope"],
        ["demo", "--out", str(blocked)],
        ["demo", "--targets", "99"],
        ["demo", "--targets", "-1"],
        ["demo", "--attack-rounds", ","],
        ["demo", "--attack-rounds", "3", "--rounds", "2"],
        ["demo", "--train-limit", "0"],
        ["demo", "--attack", "nope"],
        ["scan", str(model), "--model", "mlp", "--width", "-4"],
        ["scan", str(model), "--model", "mlp", "--threshold", "warmup+.z=nan"],
        ["scan", str(model), "--model", "mlp", "--threshold", "warmup+.z=1e300"],
        ["scan", str(model), "--model", "mlp", "--threshold", "warmup+.zz=3"],
        ["scan", str(model), "--model", "mlp", "--threshold", "warmup+.z"],
        ["scan", str(model), "--model", "mlp", "--detectors", ","],
        ["scan", str(model), "--model", "mlp", "--previous", str(tmp_path / "none")],
        ["scan", str(tmp_path / "none"), "--model", "mlp"],
        ["scan", str(model), "--model", "nope"],
        ["train", "--dp-clip", "inf"],
        ["train", "--dp-clip", "1", "--dp-noise", "nan"],
        ["train", "--lr", "inf"],
        ["train", "--server-lr", "nan"],
        ["train", "--momentum", "1.5"],
        ["train", "--save-model", str(tmp_path)],
        ["train", "--save-model", str(blocked / "m.safetensors")],
        ["train", "--aggregator", "avg"],
        ["train", "--clients", "0"],
    ]


def test_every_misuse_is_one_line_and_exit_2(tmp_path, blocked, capsys, monkeypatch):
    import gradguard.bench.attack_round as attack_run
    import gradguard.cli.demo as demo_cli
    import gradguard.fl.simulation as simulation

    def no_work(*a, **k):
        raise AssertionError("the work started before the misuse was refused")

    monkeypatch.setattr(attack_run, "run_attack", no_work)
    monkeypatch.setattr(demo_cli, "run_all", no_work)
    monkeypatch.setattr(simulation.Federation, "run", no_work)
    for argv in _cases(tmp_path, blocked):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, code, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith(f"gradguard {argv[0]}: error:"), (argv, err)
