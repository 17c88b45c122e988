"""The curious client's view of the global change, and its reconstruction of a peer."""

import copy

import pytest
import torch

from gradguard.attacks.client.curious import CuriousClient, FederationKnowledge, Observation
from gradguard.attacks.client.peer_inversion import PeerInversionConfig, invert_peers, peer_view
from gradguard.attacks.inversion.labels import mean_softmax
from gradguard.experiments.curious_client import CuriousSettings, prepare
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining, ServerHook
from gradguard.metrics import match

SETTINGS = CuriousSettings(peers=3)


class _Uploads(ServerHook):
    def __init__(self):
        self.rounds = {}

    def observe(self, rnd, updates, aggregate_delta):
        self.rounds[rnd] = updates


def _federation(aggregator: str, upload: str):
    prep = prepare("digits", 0, SETTINGS)
    training = LocalTraining(epochs=3, batch_size=8, lr=SETTINGS.lr)
    attacker = CuriousClient(0, prep.clients[0], training, upload=upload)
    clients = [attacker] + [Client(i, d, training) for i, d in enumerate(prep.clients) if i]
    hook = _Uploads()
    config = FederationConfig(rounds=2, training=training, aggregator=aggregator, byzantine=1)
    Federation(copy.deepcopy(prep.model), clients, prep.test, config, hook).run(progress=False)
    know = FederationKnowledge(4, aggregator, 1, 3, SETTINGS.lr, 8)
    return prep, attacker.observations[0], know, hook.rounds[1]


@pytest.mark.parametrize("upload", ["honest", "outlier"])
def test_under_the_mean_the_client_isolates_the_sum_of_its_peers_updates(upload):
    prep, obs, know, updates = _federation("mean", upload)
    view = peer_view(obs, know)
    peers = sum(u.flat(obs.keys) for u in updates[1:])
    assert view.peers == 3 and view.combine == "sum"
    assert torch.allclose(view.target, peers, atol=1e-5)


def test_an_outlier_upload_makes_krum_hand_over_one_peers_update_whole():
    prep, obs, know, updates = _federation("krum", "outlier")
    view = peer_view(obs, know)
    assert view.peers == 1
    assert any(torch.allclose(view.target, u.flat(obs.keys), atol=1e-6) for u in updates[1:])


def test_when_krum_chooses_the_clients_own_upload_there_is_nothing_to_invert():
    prep, obs, know, _ = _federation("krum", "honest")
    after = {k: obs.before[k] + v for k, v in _split(obs.upload, obs.before).items()}
    own = Observation(1, obs.keys, obs.before, after, obs.upload, "honest")
    assert peer_view(own, know) is None
    recon = invert_peers(prep.model, own, know, (1, 8, 8), torch.full((10,), 0.1))
    assert len(recon.images) == 0


def test_reconstruction_of_the_peer_krum_chose_beats_the_clients_prior():
    prep, obs, know, updates = _federation("krum", "outlier")
    chosen = next(
        i for i, u in enumerate(updates) if torch.allclose(obs.global_change(), u.flat(obs.keys))
    )
    own = prep.clients[0]
    recon = invert_peers(
        prep.model,
        obs,
        know,
        (1, 8, 8),
        mean_softmax(prep.model, own.x),
        PeerInversionConfig(iterations=120),
    )
    truth = prep.clients[chosen].x
    prior = own.x.mean(0, keepdim=True).expand(len(truth), -1, -1, -1)
    got, base = match(truth, recon.images), match(truth, prior)
    assert got.psnr.mean() > base.psnr.mean() + 2.0
    assert got.ssim.mean() > base.ssim.mean()
    assert sorted(recon.labels.tolist()) == sorted(prep.clients[chosen].y.tolist())


def _split(flat, like):
    out, i = {}, 0
    for k, v in like.items():
        out[k] = flat[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out
