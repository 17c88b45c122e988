"""The single-round runner: one client as before; several clients scored over all their
images; an attack that reads the secure aggregate gets gradguard's secure sum."""

import pytest

from gradguard.bench.attack_round import run_attack
from gradguard.errors import GradguardError


def test_several_clients_are_each_read_and_counted():
    one = run_attack("imprint", batch_size=16, bins=128)
    two = run_attack("imprint", batch_size=16, bins=128, clients=2)
    assert one.leaks[0].leaked == two.leaks[0].leaked  # client 0 holds the same batch
    assert [k.client_id for k in two.leaks] == [0, 1]
    assert two.leaked_fraction == sum(k.leaked for k in two.leaks) / 32
    assert "clients" in two.summary() and "clients" not in one.summary()


def test_secure_sum_attack_recovers_the_target_from_the_masked_sum():
    r = run_attack("inconsistency", batch_size=16, clients=3, bins=128)
    alone = run_attack("imprint", batch_size=16, bins=128)
    assert r.aggregate is not None and r.aggregate_cosine_to_target >= 0.99
    assert [k.client_id for k in r.leaks] == [0]
    assert r.leaks[0].leaked == alone.leaks[0].leaked > 8  # as if the server saw it alone
    assert r.leaked_fraction == pytest.approx(r.leaks[0].leaked / 48)


def test_refusals_before_work():
    with pytest.raises(GradguardError, match="applies to models"):
        run_attack("imprint", model="resnet")
    with pytest.raises(GradguardError, match="no option 'nope'"):
        run_attack("imprint", nope=1)
    with pytest.raises(GradguardError, match="exceed"):
        run_attack("imprint", batch_size=1000, clients=100)
