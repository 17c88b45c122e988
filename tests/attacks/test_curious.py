from gradguard.bench.attack_round import run_attack


def test_curious_mlp_digits_leaks_exact_images():
    r = run_attack("curious", dataset="digits", model="mlp", batch_size=32, neurons=500)
    assert r.leaked_fraction >= 0.3
    assert (r.match.psnr >= 60).sum() >= 0.3 * 32  # lone-sample rows are exact
    assert len(r.reconstruction.images) <= 32
    assert float(r.manipulated.fc1.bias.abs().max()) == 0.0


def test_curious_convnet_identity_convolutions_leak():
    r = run_attack("curious", dataset="digits", model="convnet", batch_size=32, neurons=500)
    assert r.leaked_fraction >= 0.25


def test_curious_global_scale_matches_the_paper_construction():
    r = run_attack("curious", batch_size=32, neurons=500, tune="global")
    w = r.manipulated.fc1.weight
    scale = r.reconstruction.info["scale"]
    # every row: negative half -|n|, positive half s * (the same magnitudes)
    row = w[0]
    assert (row < 0).sum() == (row > 0).sum()
    assert abs(row[row > 0].abs().sum() / row[row < 0].abs().sum() - scale) < 1e-4
    assert r.leaked_fraction >= 0.2


def test_curious_spread_moves_every_honest_row_and_still_leaks():
    base = dict(signs="binomial", sigma="honest", bias="honest", traps=32)
    plain = run_attack("curious", model="mlp", batch_size=16, neurons=256, **base)
    spread = run_attack("curious", model="mlp", batch_size=16, neurons=256, spread=1.0, **base)
    moved = (spread.manipulated.fc1.weight - spread.honest.fc1.weight).norm(dim=1)
    assert (moved / spread.honest.fc1.weight.norm(dim=1) > 0.5).all()  # every row moved
    assert spread.leaked_fraction >= 0.25
    assert (spread.match.psnr >= 60).sum() >= 4  # trap rows still return exact images
    assert plain.leaked_fraction >= 0.25
