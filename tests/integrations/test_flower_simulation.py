"""Flower's simulation engine for real: 3 clients x 4 rounds, the server attacks in round 3.

Clients 0 and 1 run the guard mod (chosen in the client app's code), client 2 does not. The
run config, the server's side, tries every way to disarm the guard (warn, one harmless
detector, infinite thresholds, ``guarded=none``): ignored. Every guarded client abstains
with an Error reply, the run completes, the attacker recovers nothing from the guarded
clients and real images from the unguarded one.
"""

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs flwr[simulation]")

from gradguard.bench.scenario import Scenario  # noqa: E402
from gradguard.detect.thresholds import DEFAULTS  # noqa: E402

DISARM = {
    "guard-policy": "warn",
    "guard-detectors": "architecture",
    "guard-thresholds": ",".join(f"{k}=inf" for k in DEFAULTS),
    "guarded": "none",
}

pytestmark = [pytest.mark.flower, pytest.mark.slow]


def test_simulation_engine_guard_mod_and_malicious_strategy():
    from gradguard.integrations.flower.simulation import run_flower

    sc = Scenario(clients=3, rounds=4, attack_rounds=(3,))
    result = run_flower(sc, guarded=[0, 1], attacked=True, run_config=DISARM)
    assert [r.round for r in result.rounds] == [1, 2, 3, 4]  # the run went on
    attacked = result.rounds[2]
    assert attacked.targeted == [0, 1, 2]
    assert attacked.abstained == [0, 1]
    assert {leak.client_id for leak in attacked.leaks} == {2}
    assert attacked.leaks[0].leaked > 0
    reasons = [v.summary for v in attacked.verdicts if not v.allowed]
    assert len(reasons) == 2 and all("imprint" in r for r in reasons)
    for r in (result.rounds[0], result.rounds[1], result.rounds[3]):
        assert r.abstained == []
        accepted = [v for v in r.verdicts if v.allowed]
        assert {v.client_id for v in accepted} == {0, 1}  # verdicts reported as records
        assert all("ignored" in v.summary for v in accepted)  # the run config did arrive
    assert result.final_accuracy > 0.5
