import torch

from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import build, guarded_clients, make_attack, make_guard


def test_build_is_deterministic_and_keeps_the_aux_data_apart():
    sc = Scenario(clients=3, train_limit=600, aux_size=64)
    a, b = build(sc), build(sc)
    assert all(torch.equal(x.x, y.x) for x, y in zip(a.parts, b.parts, strict=True))
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert len(a.aux) == 64 and sum(len(p) for p in a.parts) == 600 - 64


def test_factories_follow_the_scenario():
    sc = Scenario(attack="curious", batch_size=16, attack_options=(("neurons", 300),))
    attack = make_attack(sc)
    assert (attack.neurons, attack.batch_size) == (300, 16)  # the clients' batch size
    setup = build(Scenario())
    guard = make_guard(
        Scenario(guard_policy="warn", guard_detectors=("architecture",)), setup.model, None
    )
    assert guard.config.policy == "warn" and guard.config.detectors == ("architecture",)
    assert guarded_clients("0,2", 4) == {0, 2} and guarded_clients(True, 2) == {0, 1}
    assert guarded_clients("none", 3) == set()
