"""The malicious server in the in-process federation: guarded clients abstain and leak
nothing; unguarded clients leak real images (matched PSNR >= 30 dB against their data)."""

from gradguard.bench.inprocess import run_inprocess
from gradguard.bench.scenario import Scenario

SMALL = Scenario(clients=3, rounds=4, attack_rounds=(3,))


def test_guarded_clients_abstain_and_unguarded_leak():
    result = run_inprocess(SMALL, guarded=[0, 1], attacked=True)
    assert [r.round for r in result.rounds] == [1, 2, 3, 4]
    attacked = result.rounds[2]
    assert attacked.attacked and attacked.targeted == [0, 1, 2]
    assert attacked.abstained == [0, 1]
    leaks = {leak.client_id: leak.leaked for leak in attacked.leaks}
    assert set(leaks) == {2}  # nothing came back from the guarded clients
    assert leaks[2] > 0
    flagged = [v for v in attacked.verdicts if v.malicious]
    assert {v.client_id for v in flagged} == {0, 1}
    assert all("imprint" in v.summary for v in flagged)
    # honest rounds: no abstention, no false alarm
    for r in (result.rounds[0], result.rounds[1], result.rounds[3]):
        assert r.abstained == [] and not any(v.malicious for v in r.verdicts)
    assert result.final_accuracy > 0.5


def test_run_config_round_trip():
    sc = Scenario(
        targets=(0, 2),
        attack_options=(("bins", 256),),
        guard_thresholds=(("forensics.cosine", 0.99),),
        steps=3,
    )
    assert Scenario.from_run_config(sc.to_run_config()) == sc
