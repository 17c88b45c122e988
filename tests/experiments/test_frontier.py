"""The frontier experiment runs an attack for real and scores every detector on it."""

from __future__ import annotations

from gradguard.experiments import frontier


def test_textbook_imprint_point_leaks_and_the_guard_flags_it():
    fam = frontier.Family("imprint/mlp", "imprint", "mlp", "digits", 16, {"bins": 64})
    row = frontier.run_point(fam, "textbook", None, {}, ["forensics"], data_samples=200)
    assert row["leaked_fraction"] >= 0.5
    assert row["leaked_fraction"] > row["honest_leaked_fraction"]
    assert row["flagged"]["guard"] and row["flagged"]["forensics"]
    assert not row["honest_flagged"]["guard"]


def test_points_start_with_the_textbook_setting_and_sweep_declared_dials():
    fam = frontier.Family("imprint/mlp", "imprint", "mlp")
    pts = frontier.points(fam)
    assert pts[0] == ("textbook", None, {})
    klass = frontier.attack_class("imprint")
    declared = sum(len(v) - 1 for v in getattr(klass, "dials", {}).values())
    assert len(pts) == 1 + declared + bool(getattr(klass, "adaptive", None))


def test_adaptive_sweep_moves_one_dial_of_the_adaptive_combination():
    klass = frontier.attack_class("curious")
    fam = frontier.Family("curious/mlp-b16", "curious", "mlp", batch=16, single_dials=False)
    pts = frontier.points(fam)
    assert [p[0] for p in pts[:2]] == ["textbook", "adaptive"]
    swept = [p for p in pts if p[0] == "adaptive+traps"]
    assert [p[1] for p in swept] == list(klass.adaptive_sweep["traps"])
    assert all(p[2] == {**klass.adaptive, "traps": p[1]} for p in swept)


def test_evasions_are_leaking_points_that_pass_a_detector():
    rows = [
        {
            "family": "f",
            "dial": "textbook",
            "honest_leaked_fraction": 0.2,
            "leaked_fraction": 0.7,
            "psnr_max": 90.0,
            "flagged": {"a": True, "guard": True},
        },
        {
            "family": "f",
            "dial": "noise",
            "value": 0.1,
            "leaked_fraction": 0.6,
            "psnr_max": 90.0,
            "flagged": {"a": False, "guard": True},
        },
        {
            "family": "f",
            "dial": "noise",
            "value": 0.5,
            "leaked_fraction": 0.1,
            "psnr_max": 20.0,
            "flagged": {"a": False, "guard": False},
        },
    ]
    ev = frontier.evasions(rows)
    assert [(e["value"], e["passes"]) for e in ev] == [(0.1, ["a"])]


def test_a_convnet_point_leaks_by_the_larger_decoder_against_the_fair_honest_share():
    textbook = {
        "family": "c",
        "dial": "textbook",
        "honest_leaked_fraction": 0.4,
        "leaked_fraction": 0.8,
        "rows_leaked_fraction": 1.0,
        "psnr_max": 90.0,
        "flagged": {"guard": True},
    }

    def point(value, own, rows):
        return {
            "family": "c",
            "dial": "bend",
            "value": value,
            "leaked_fraction": own,
            "rows_leaked_fraction": rows,
            "psnr_max": 90.0,
            "flagged": {"guard": False},
        }

    ev = frontier.evasions([textbook, point(1, 0.1, 0.75), point(2, 0.5, 0.3), point(3, 0.1, 0.3)])
    assert [(e["value"], e["honest_leaked_fraction"]) for e in ev] == [(1, 0.4), (2, 0.4)]


def test_a_convnet_textbook_point_gets_the_fair_honest_share_and_rows_leak():
    fam = frontier.Family(
        "curious/convnet-b16", "curious", "convnet", "digits", 16, {"neurons": 256}
    )
    row = frontier.run_point(fam, "textbook", None, {}, ["forensics"], data_samples=200)
    assert 0 < row["honest_leaked_fraction"] < row["rows_leaked_fraction"]
    assert row["rows_leaked_fraction"] >= row["leaked_fraction"] > row["honest_leaked_fraction"]


def test_each_seed_is_judged_against_its_own_honest_share():
    def row(seed, dial, leak, honest=None):
        r = {
            "family": "c",
            "seed": seed,
            "dial": dial,
            "value": seed,
            "leaked_fraction": leak,
            "psnr_max": 90.0,
            "flagged": {"guard": dial == "textbook"},
        }
        if honest is not None:
            r["honest_leaked_fraction"] = honest
        return r

    rows = [row(0, "textbook", 0.9, 0.2), row(1, "textbook", 0.9, 0.5)]
    rows += [row(0, "bend", 0.4), row(1, "bend", 0.4)]
    assert [e["seed"] for e in frontier.evasions(rows)] == [0]
