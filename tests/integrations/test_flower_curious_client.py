"""A curious client among honest ones in Flower's simulation engine (Ray), Flower's own Krum.

Four digits clients, 8 images each, two rounds of FedAvg (3 local steps). Client 0 uploads
an outlier, so Flower's Krum picks a peer's model; from the two global models it received
and its own upload, client 0 reconstructs that peer's images better than its prior (the mean
image of its own data).
"""

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs flwr[simulation]")

pytestmark = [pytest.mark.flower, pytest.mark.slow]


def test_curious_client_app_reconstructs_the_peer_krum_chose(tmp_path):
    import torch
    from flwr.app import ArrayRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import Krum
    from flwr.simulation import run_simulation

    from gradguard.attacks.client.curious import FederationKnowledge, Observation
    from gradguard.attacks.client.peer_inversion import PeerInversionConfig, invert_peers
    from gradguard.attacks.inversion.labels import mean_softmax
    from gradguard.experiments.curious_client import CuriousSettings, prepare
    from gradguard.fl import LocalTraining
    from gradguard.integrations.flower.curious_client import curious_client_app
    from gradguard.integrations.flower.simulation import ray_session, warnings_silenced
    from gradguard.metrics import match

    settings = CuriousSettings(peers=3)
    prep = prepare("digits", 0, settings)
    training = LocalTraining(epochs=3, batch_size=8, lr=settings.lr)
    client = curious_client_app(prep.clients, prep.model, training, tmp_path, upload="outlier")
    server = ServerApp()

    @server.main()
    def main(grid: Grid, ctx: Context) -> None:
        strategy = Krum(
            fraction_evaluate=0.0,
            min_train_nodes=4,
            min_available_nodes=4,
            num_malicious_nodes=1,
        )
        strategy.start(grid, ArrayRecord(prep.model.state_dict()), num_rounds=2)

    with ray_session(num_cpus=1), warnings_silenced():
        run_simulation(
            server,
            client,
            num_supernodes=4,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    obs = Observation.load(tmp_path / "round1.safetensors")
    know = FederationKnowledge(4, "krum", 1, 3, settings.lr, 8)
    probe = prep.model
    recon = invert_peers(
        probe,
        obs,
        know,
        (1, 8, 8),
        mean_softmax(probe, prep.clients[0].x),
        PeerInversionConfig(iterations=120),
    )
    change = obs.global_change()
    chosen = [
        i for i in (1, 2, 3) if torch.allclose(change, _delta(prep, training, i, obs), atol=1e-5)
    ]
    assert len(chosen) == 1  # Krum took one peer's model whole
    truth = prep.clients[chosen[0]].x
    prior = prep.clients[0].x.mean(0, keepdim=True).expand(len(truth), -1, -1, -1)
    assert match(truth, recon.images).psnr.mean() > match(truth, prior).psnr.mean() + 2.0


def _delta(prep, training, pid, obs):
    import copy

    import torch

    from gradguard.fl import local_update

    model = copy.deepcopy(prep.model)
    model.load_state_dict(obs.before)
    gen = torch.Generator().manual_seed(1 * 101 + pid)
    return local_update(model, prep.clients[pid], training, gen, pid).flat(obs.keys)
