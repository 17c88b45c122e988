"""The in-process engine: guarded clients abstain and leak nothing; unguarded clients leak
real images (matched PSNR >= 30 dB against their data)."""

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


def test_per_client_attack_recovers_the_target_from_the_round_sum():
    """Model inconsistency in a federation: the server reads the target's images from the
    round's summed update; every other client trained on zeroed layers."""
    sc = Scenario(clients=3, rounds=2, attack="inconsistency", attack_rounds=(1,), epochs=1)
    result = run_inprocess(sc, guarded=False, attacked=True)
    first = result.rounds[0]
    assert first.targeted == [0, 1, 2]
    assert [leak.client_id for leak in first.leaks] == [0]
    assert first.leaks[0].leaked > 0


def test_under_secure_aggregation_the_campaign_reads_the_aggregate():
    """The federation's own secure sum (pairwise masks): the server sees one aggregate, and
    the inconsistency campaign reads the target's images from it."""
    from gradguard.attacks import get_attack
    from gradguard.bench.campaign import Campaign
    from gradguard.bench.inprocess import CampaignServer
    from gradguard.bench.setup import build
    from gradguard.fl import Client, Federation, FederationConfig, LocalTraining

    sc = Scenario(clients=3, train_limit=600, aux_size=64)
    setup = build(sc)
    parts = [p.subset(range(16)) for p in setup.parts]
    training = LocalTraining(batch_size=16, lr=0.05, fedsgd=True)
    campaign = Campaign(
        get_attack("inconsistency", target=2),
        (1,),
        None,
        setup.aux,
        {i: p.x for i, p in enumerate(parts)},
    )
    hook = CampaignServer(campaign, [0, 1, 2], examples=48, lr=0.05)
    clients = [Client(i, p, training) for i, p in enumerate(parts)]
    config = FederationConfig(rounds=1, training=training, secure_aggregation=True)
    Federation(setup.model, clients, setup.test, config, hook).run(progress=False)
    (leak,) = campaign.leaks[1]
    assert leak.client_id == 2 and leak.leaked >= 8
