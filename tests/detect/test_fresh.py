import torch

from gradguard.detect.fresh import fresh_states
from gradguard.models import build_model


def test_fresh_states_reinitialise_by_seed_and_leave_the_random_state_alone():
    model = build_model("resnet", (1, 8, 8), 10, norm="batch")
    with torch.no_grad():
        model.head.weight.fill_(5.0)
        model.stem.norm.running_var.fill_(9.0)
    state = torch.random.get_rng_state()
    heads = [f.head.weight.detach().clone() for f in fresh_states(model, [0, 1, 0])]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(heads[0], heads[2]) and not torch.equal(heads[0], heads[1])
    assert float(heads[0].abs().max()) < 1.0  # the template's own values are gone
    fresh = next(fresh_states(model, [0]))
    assert torch.equal(fresh.stem.norm.running_var, torch.ones(16))
    assert model.head.weight[0, 0].item() == 5.0  # the template is untouched
