"""Flower's real SecAgg+ (secaggplus_mod on the clients, SecAggPlusWorkflow on the server),
2 clients x 1 round: the malicious strategy sends each client its own model through the bench
Campaign and reads images from the only thing SecAgg+ gives it, the aggregate, when it picks
the protocol's quantisation and clipping itself (clipping sized to the layer it decodes)."""

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs flwr[simulation]")

pytestmark = [pytest.mark.flower, pytest.mark.slow]


def _attacker_settings(**extra):
    from gradguard.integrations.flower.secagg import SecAggSettings

    return SecAggSettings(
        clipping_range=0, quantization_range=2**30, modulus_range=2**40, max_weight=16.0, **extra
    )


def test_loki_reads_each_client_from_the_secaggplus_aggregate_under_fedavg():
    from gradguard.integrations.flower.secagg import attack_through_secagg

    r = attack_through_secagg(
        "loki", _attacker_settings(), model="convnet", clients=2, batch_size=16, local_steps=4
    )
    assert r["aggregate"] is not None and set(r["sent"]) == {0, 1}
    # distinct models went out: each client's own channel block
    assert (r["sent"][0]["conv1.weight"] != r["sent"][1]["conv1.weight"]).any()
    assert r["leaked_fraction"] >= 0.5, r  # 68.8% measured, as in-process
    assert all(n >= 6 for n in r["leaked"].values()), r


def test_inconsistency_recovers_the_target_from_the_secaggplus_aggregate():
    from gradguard.integrations.flower.secagg import attack_through_secagg

    r = attack_through_secagg(
        "inconsistency",
        _attacker_settings(clip_to="all"),
        model="mlp",
        clients=2,
        batch_size=16,
        imprint_scale=0.01,  # small imprint rows: a small clipping range, fine rounding
    )
    assert r["leaked"].get("0", 0) >= 12, r  # the target's 16 of 16 measured, 64 dB
    assert r["aggregate_cosine_to_target"] >= 0.99, r  # 0.998: the sum is the target's update


def test_inconsistency_leaks_at_flowers_default_secaggplus_settings():
    from gradguard.integrations.flower.secagg import SecAggSettings, attack_through_secagg

    r = attack_through_secagg(
        "inconsistency",
        SecAggSettings(),
        model="mlp",
        clients=2,
        batch_size=16,
        imprint_scale=1e-4,  # bins' gradients 10^4 x: above the default quantisation step
    )
    assert r["leaked"].get("0", 0) >= 8, r  # 13 of 16 measured, 39 dB
