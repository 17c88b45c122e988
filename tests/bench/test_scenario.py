from gradguard.bench.scenario import Scenario


def test_run_config_round_trip():
    sc = Scenario(
        targets=(0, 2),
        attack_options=(("bins", 256), ("shuffle", True), ("measurement", "dct")),
        guard_thresholds=(("forensics.duplicate_rows", 0.99),),
        guard_detectors=("architecture", "exposure"),
        steps=3,
    )
    assert Scenario.from_run_config(sc.to_run_config()) == sc
    assert Scenario.from_run_config({}) == Scenario()
    assert Scenario.from_run_config({"targets": "all"}).targets is None
