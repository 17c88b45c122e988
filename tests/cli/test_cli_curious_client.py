import json

from gradguard.cli import main


def test_curious_client_reports_psnr_mean_and_best_as_json(capsys):
    code = main(
        [
            "attack",
            "curious-client",
            "--aggregator",
            "krum",
            "--upload",
            "outlier",
            "--iterations",
            "60",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["aggregator"] == "krum" and out["reconstructed_images"] == 8
    assert out["psnr_best"] >= out["psnr_mean"] > out["baseline_psnr"]


def test_curious_client_refuses_an_unknown_aggregator(capsys):
    assert main(["attack", "curious-client", "--aggregator", "fedbogus", "--json"]) == 2
    assert "unknown aggregator" in capsys.readouterr().err


def test_curious_client_refuses_negative_dp_noise(capsys):
    assert main(["attack", "curious-client", "--dp-noise", "-1", "--json"]) == 2
    assert "--dp-noise" in capsys.readouterr().err
