"""Tiny versions of the experiments, asserting real outcomes (issue 4, must show 1-3)."""

from __future__ import annotations

import logging

from gradguard.experiments import detection_matrix as dm
from gradguard.experiments import fishing_zscores as fz
from gradguard.experiments import warmup_profile as wp
from gradguard.experiments.harness import GUARD

logging.getLogger("gradguard.detect").setLevel(logging.ERROR)


def test_imprint_row_leaks_and_is_detected_while_dsnr_misses_it():
    cfg = dm.MatrixConfig(seeds=(0,), pretrain_rounds=1)
    setting = dm.Setting("imprint", "8 bins", {"bins": 8}, "mlp", batch=16, mildest=True)
    run = dm.run_one(setting, 0, cfg, ["architecture", "forensics", "dsnr"])
    assert run["leaked"] >= 1 and run["best_psnr"] >= 25.0  # the attack really leaks
    assert run["detectors"]["forensics"]["flagged"]
    assert run["detectors"][GUARD]["flagged"]
    assert not run["detectors"]["dsnr"]["flagged"]  # seed 000, sec. 3.2: D-SNR misses imprint
    assert not run["detectors"]["architecture"]["flagged"]  # parameters only
    row = dm.summarize_setting(setting, [run], ["forensics", "dsnr", GUARD])
    assert row["rates"][GUARD] == 1.0 and row["guard_on_leaking"] == 1.0
    assert dm.guard_target([row])["met"]


def test_architecture_change_is_caught_by_the_architecture_check():
    cfg = dm.MatrixConfig(seeds=(0,), pretrain_rounds=0)
    setting = dm.Setting("imprint-arch", "8 bins", {"bins": 8}, "mlp", batch=8)
    run = dm.run_one(setting, 0, cfg, ["architecture"])
    assert run["leaked"] >= 1
    assert run["detectors"]["architecture"]["flagged"] and run["detectors"][GUARD]["flagged"]


def test_figure3_profile_records_z_and_accuracy(tmp_path):
    cfg = wp.ProfileConfig(model="mlp", norm=None, rounds=1, detectors=("warmup",))
    result = wp.run(cfg, progress=False)
    assert [r["round"] for r in result["rounds"]] == [0, 1]
    z = result["rounds"][1]["detectors"]["warmup"]
    assert z["max_z"] > 0 and "linear[0]_weight" in z["per_layer"]
    wp.plot(result, str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_table1_fishing_raises_linear_z_above_honest():
    cfg = fz.Table1Config(pretrain_rounds=1, attacks=(("fishing-class", {"bias": 1000.0}),))
    result = fz.run(cfg, progress=False)

    def linear_peak(name: str) -> float:
        step = result["models"][name]["step"]
        return max(abs(v) for k, z in step.items() if k.startswith("linear") for v in z.values())

    # Seed 000, Table 1: the linear layers' Z-scores jump after one step on a fished model.
    assert linear_peak("fishing-class") > 5 * linear_peak("honest")
    assert result["linear_layers"] == {"linear[0]": "head", "linear[-1]": "head"}
    assert "linear[-1]_bias" in fz.to_markdown(result)
