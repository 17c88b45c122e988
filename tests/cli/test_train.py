"""``gradguard train`` end to end on digits: JSON, table, saved model, flag errors."""

import json

import pytest

from gradguard.cli import main


def _run(capsys, *flags):
    code = main(["train", "--no-progress", *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_is_one_object_and_deterministic(capsys, tmp_path):
    flags = ["--rounds", "2", "--clients", "3", "--local-steps", "5", "--json", "--seed", "4"]
    code, out, err = _run(capsys, *flags, "--save-model", str(tmp_path / "m.safetensors"))
    assert code == 0 and out.count("\n") == 1
    summary = json.loads(out)
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for r in summary["rounds"]:
        assert {
            "accuracy",
            "seconds",
            "train_seconds",
            "aggregate_seconds",
            "overhead_seconds",
        } <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["seconds"] >= r["train_seconds"]
    assert summary["final_accuracy"] == summary["rounds"][-1]["accuracy"] > 0.15
    from gradguard.models import build_model
    from gradguard.models.io import load_state

    model = build_model("mlp", (1, 8, 8), 10)
    model.load_state_dict(load_state(tmp_path / "m.safetensors"))
    _, again, _ = _run(capsys, *flags)
    assert [r["accuracy"] for r in json.loads(again)["rounds"]] == [
        r["accuracy"] for r in summary["rounds"]
    ]


def test_table_secure_dp_and_robust(capsys):
    code, out, _ = _run(
        capsys,
        "--rounds",
        "1",
        "--clients",
        "4",
        "--local-steps",
        "3",
        "--secure-aggregation",
        "--dp-clip",
        "1.0",
        "--dp-noise",
        "0.01",
    )
    assert code == 0 and "final accuracy" in out and "round" in out
    code, out, _ = _run(
        capsys,
        "--rounds",
        "1",
        "--clients",
        "5",
        "--local-steps",
        "3",
        "--aggregator",
        "krum",
        "--poisoned",
        "1",
        "--json",
        "--clients-per-round",
        "4",
        "--partition",
        "dirichlet:0.5",
    )
    assert code == 0 and len(json.loads(out)["rounds"][0]["participants"]) == 4


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--clients", "0"], "--clients must be > 0"),
        (["--aggregator", "avg"], "unknown aggregator"),
        (["--partition", "zipf"], "unknown partition"),
        (["--model", "gpt"], "unknown model"),
        (["--dataset", "/nonexistent/x"], "no such data set"),
        (["--secure-aggregation", "--aggregator", "median"], "only the mean"),
        (["--dp-noise", "1"], "needs --dp-clip"),
        (["--byzantine", "3", "--clients", "5"], "fewer than half"),
        (["--clients-per-round", "9", "--clients", "5"], "exceeds"),
        (["--norm", "batch"], "no choice of norm"),
        (["--lr", "-1"], "--lr must be > 0"),
    ],
)
def test_bad_flags_one_line_exit_2(capsys, flags, words):
    code, out, err = _run(capsys, "--rounds", "1", *flags)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gradguard train: error:") and words in err
