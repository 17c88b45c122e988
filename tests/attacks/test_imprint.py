import pytest
import torch

from gradguard.attacks.inversion.analytic import invert_bins
from gradguard.attacks.server.imprint import bin_thresholds, measurement_vector
from gradguard.bench.attack_round import run_attack
from gradguard.errors import GradguardError


def test_imprint_mlp_digits_recovers_images_exactly():
    r = run_attack("imprint", dataset="digits", model="mlp", batch_size=16, bins=128)
    assert r.leaked_fraction >= 0.6
    leaked = r.match.psnr[r.match.psnr >= 30]
    assert leaked.mean() > 60  # bins with one image give it back to float precision
    assert r.manipulated.fc1.weight.shape == (128, 64)


@pytest.mark.parametrize("measurement", ["random", "dct"])
def test_imprint_other_measurements_leak(measurement):
    r = run_attack("imprint", batch_size=16, bins=128, measurement=measurement)
    assert r.leaked_fraction >= 0.5


def test_imprint_convnet_identity_convolutions_leak():
    r = run_attack("imprint", dataset="digits", model="convnet", batch_size=32, bins=256)
    assert r.leaked_fraction >= 0.5
    conv1 = r.manipulated.conv1.weight
    assert conv1[0, 0, 1, 1] == 1 and conv1.abs().sum() == 1  # a Dirac kernel


def test_imprint_arch_leaks_on_any_model():
    r = run_attack("imprint-arch", dataset="digits", model="convnet", batch_size=16, bins=128)
    assert r.leaked_fraction >= 0.6
    assert "imprint.fc1.weight" in r.manipulated.state_dict()


def test_imprint_fedavg_delta_still_leaks_but_less():
    sgd = run_attack("imprint", batch_size=32, bins=256)
    avg = run_attack("imprint", batch_size=32, bins=256, local_steps=4, lr=0.05)
    assert avg.update.kind == "delta" and avg.update.local_steps == 4
    assert 0.2 <= avg.leaked_fraction <= sgd.leaked_fraction


def test_bin_difference_is_exact_for_lone_samples():
    x = torch.rand(3, 10)
    m = torch.tensor([0.1, 0.5, 0.9])  # one sample per bin
    q = torch.tensor([0.0, 0.3, 0.7])
    fires = (m[:, None] > q[None, :]).double()  # samples x rows
    grad = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)[:, None]
    dw = (fires * grad).T @ x.double()
    db = (fires * grad).sum(0)
    rec, rows = invert_bins(dw, db, torch.arange(3))
    assert torch.allclose(rec, x, atol=1e-6) and rows.tolist() == [0, 1, 2]


def test_thresholds_are_equal_mass_and_ascending():
    values = torch.randn(20_000)
    for kind in ("gaussian", "empirical"):
        q = bin_thresholds(values, 8, kind)
        assert torch.all(q[1:] > q[:-1]) and q[0] < values.min()
        counts = [(values > q[i]).float().mean() for i in range(8)]
        assert abs(counts[4] - 0.5) < 0.02
    assert torch.isclose(
        measurement_vector("brightness", (1, 2, 2)).norm().float(), torch.tensor(1.0)
    )


def test_imprint_rejects_unsupported_model_and_width_mismatch():
    with pytest.raises(GradguardError, match="applies to models"):
        run_attack("imprint", model="resnet")
    from gradguard.attacks import get_attack
    from gradguard.data import train_test
    from gradguard.models import build_model

    _, test = train_test("digits")
    with pytest.raises(GradguardError, match="width=64"):
        get_attack("imprint", bins=64).manipulate(build_model("mlp", (1, 8, 8), 10), test)
