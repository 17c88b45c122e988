"""The declared attack contract: defaults, one registry lookup, one option style."""

import pytest

from gradguard.attacks import ATTACKS, ServerAttack, attack_class, get_attack
from gradguard.attacks.base import check_options
from gradguard.errors import GradguardError
from gradguard.options import parse_pairs


def test_every_registered_attack_declares_the_contract():
    import inspect

    from gradguard.models import MODELS

    for name in ATTACKS:
        klass = attack_class(name)
        assert issubclass(klass, ServerAttack) and klass.name == name
        assert klass.models is None or set(klass.models) <= set(MODELS)
        params = inspect.signature(klass).parameters
        assert klass.takes_batch_size == ("batch_size" in params), name
        if klass.per_client:
            assert klass.manipulate_clients is not ServerAttack.manipulate_clients, name
        if klass.secure_sum:
            assert klass.reconstruct_sum is not ServerAttack.reconstruct_sum, name
    assert {"inconsistency", "loki"} <= {n for n in ATTACKS if attack_class(n).per_client}


def test_the_batch_size_goes_only_where_it_is_declared():
    assert get_attack("curious", batch_size=16).batch_size == 16
    assert get_attack("curious", batch_size=16, **{"batch-size": 8}).batch_size == 8
    assert not hasattr(get_attack("imprint", batch_size=16), "batch_size")


def test_one_key_value_style_checked_against_the_constructor():
    options = parse_pairs(["bins=128", "shuffle=true", "row_noise=0.2", "measurement=dct"])
    assert options == {"bins": 128, "shuffle": True, "row_noise": 0.2, "measurement": "dct"}
    check_options("imprint", attack_class("imprint"), options)
    with pytest.raises(GradguardError, match="expected KEY=VALUE"):
        parse_pairs(["=3"])
    with pytest.raises(GradguardError, match="no option 'nope'"):
        check_options("imprint", attack_class("imprint"), {"nope": 1})
    with pytest.raises(GradguardError, match="expected int"):
        check_options("imprint", attack_class("imprint"), {"bins": 1.5})
    with pytest.raises(GradguardError, match="finite"):
        check_options("imprint", attack_class("imprint"), {"row_noise": float("inf")})
    with pytest.raises(GradguardError, match="unknown attack"):
        attack_class("nope")
