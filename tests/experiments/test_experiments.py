"""Tiny versions of the experiments, asserting real outcomes (issue 4, must show 1-3)."""

from __future__ import annotations

import logging

import pytest

from gradguard.errors import GradguardError
from gradguard.experiments import detection_matrix as dm
from gradguard.experiments import false_positives as fp
from gradguard.experiments import fishing_zscores as fz
from gradguard.experiments import warmup_profile as wp
from gradguard.experiments.harness import GUARD, inspect_all
from gradguard.experiments.honest_corpus import CorpusConfig, honest_models

logging.getLogger("gradguard.detect").setLevel(logging.ERROR)

MLP_ONLY = CorpusConfig(families=(("mlp", None),), partitions=("iid",), rounds=2)


def test_corpus_trains_and_guard_passes_honest_models():
    models = list(honest_models(MLP_ONLY))
    assert [m.round for m in models] == [0, 1, 2]
    assert models[-1].accuracy > models[0].accuracy + 0.1  # real training happened
    assert models[0].previous is None and models[1].previous is not None
    for m in models:
        out = inspect_all(
            m.state, m.template, m.data, ["architecture", "forensics"], previous=m.previous
        )
        assert not out[GUARD].flagged, out[GUARD].summary
        assert out[GUARD].verified


def test_corpus_keeps_calibration_seeds_out():
    with pytest.raises(GradguardError):
        CorpusConfig(seeds=(1000,))
    assert CorpusConfig(rounds=20, every=5).snapshot_rounds() == [0, 1, 5, 10, 15, 20]


def test_false_positive_summary_counts_every_model():
    result = fp.run(
        fp.FalsePositiveConfig(corpus=MLP_ONLY, detectors=("architecture",)), progress=False
    )
    overall = result["summary"]["overall"]
    assert overall["architecture"]["models"] == 3
    assert overall["architecture"]["fpr"] == 0.0
    assert "| architecture | 3 | 0 |" in fp.to_markdown(result)


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
