"""Flower's real SecAgg+ (secaggplus_mod on the clients, SecAggPlusWorkflow on the server),
2 clients x 1 round: the malicious strategy sends each client its own LOKI model through the
bench Campaign and reads both clients' images from the only thing SecAgg+ gives it, the
aggregate, when it picks the protocol's quantisation and clipping itself."""

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs flwr[simulation]")

pytestmark = [pytest.mark.flower, pytest.mark.slow]


def test_loki_reads_each_client_from_the_secaggplus_aggregate():
    from gradguard.integrations.flower.secagg import SecAggSettings, attack_through_secagg

    settings = SecAggSettings(
        clipping_range=0, quantization_range=2**30, modulus_range=2**40, max_weight=16.0
    )
    r = attack_through_secagg(
        "loki",
        settings,
        model="convnet",
        clients=2,
        batch_size=16,
        tap_scale=1.0,
        imprint_scale=0.1,  # the SecAgg+-sized LOKI (docs/secagg.md)
        head_scale=1.0,
    )
    assert r["aggregate"] is not None and set(r["sent"]) == {0, 1}
    # distinct models went out: each client's own channel block
    assert (r["sent"][0]["conv1.weight"] != r["sent"][1]["conv1.weight"]).any()
    assert r["leaked_fraction"] >= 0.4, r  # 72% measured (in-process 81%)
    assert all(n >= 4 for n in r["leaked"].values()), r
