"""Readings of seed 000's warm-up Z-score, Figure 3 and Table 1 under warmup-paper."""

import math

from gradguard.experiments import fishing_zscores as fz
from gradguard.experiments import warmup_profile as wp
from gradguard.experiments import warmup_readings as wr


def test_readings_separate_the_literal_from_the_paper_scale():
    cfg = wr.ReadingsConfig(
        model="mlp", norm=None, rounds=1, fish_rounds=(1,), attacks=(("fishing-class", {}),)
    )
    raw = wr.collect(cfg, progress=False)
    rows = {r["reading"]: r for r in wr.evaluate(raw)}
    literal, paper = rows["literal (warmup)"], rows["relative scale 1e-2"]
    # the literal first step divides a change by 1e-8; the paper reports honest Z < 4000
    assert literal["honest_peak"] > 1e4 and literal["rounds_below_4000"] == 0
    assert paper["honest_peak"] < 100 and paper["rounds_below_4000"] == paper["rounds"]
    # a Z-score against a history that holds the current value is bounded by sqrt(t)
    assert rows["including current"]["honest_peak"] <= math.sqrt(5) + 1e-6
    # plain SGD leaves the softmax layer's means at float rounding level
    for drift in raw["softmax_mean_drift"].values():
        assert abs(drift["mean_change"]) < drift["ulp_at_scale"]
        assert drift["gradient_abs_mean"] > 1e4 * abs(drift["gradient_mean"])


def test_figure3_records_both_readings():
    result = wp.run(wp.ProfileConfig(model="mlp", norm=None, rounds=1), progress=False)
    r = result["rounds"][1]["detectors"]
    assert set(r) == {"warmup", "warmup-paper"}
    assert r["warmup"]["max_z"] > 1e4 > 100 > r["warmup-paper"]["max_z"]
    assert not r["warmup"]["flagged"] and not r["warmup-paper"]["flagged"]


def test_table1_under_warmup_paper_lifts_the_head_and_marks_its_mean():
    cfg = fz.Table1Config(
        pretrain_rounds=1, attacks=(("fishing-class", {"bias": 1000.0}),), detector="warmup-paper"
    )
    result = fz.run(cfg, progress=False)
    noise = set(result["rounding_noise"])
    assert {"linear[-1]_weight.mean", "linear[-1]_bias.mean"} <= noise

    def linear_peak(name: str) -> float:
        step = result["models"][name]["step"]
        return max(
            abs(v)
            for k, z in step.items()
            if k.startswith("linear")
            for s, v in z.items()
            if f"{k}.{s}" not in noise
        )

    # Table 1's shape: the head's Z after one step rises under fishing (measured ~9x here)
    assert linear_peak("fishing-class") > 5 * linear_peak("honest")
    assert "(" in fz.to_markdown(result)  # the rounding-noise cells are marked
