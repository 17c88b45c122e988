"""Local training: FedSGD is the true batch gradient, FedAvg's delta is the parameter change."""

import pytest
import torch
from torch.nn import functional as F

from gradguard.data import train_test
from gradguard.errors import GradguardError
from gradguard.fl import Client, LocalTraining, local_update
from gradguard.fl.byzantine import SignFlip
from gradguard.fl.update import float_state
from gradguard.models import build_model


def _setup(model="mlp", **kw):
    train, _ = train_test("digits")
    torch.manual_seed(0)
    return build_model(model, train.image_shape, 10, **kw), train.subset(list(range(40)))


def test_fedsgd_is_the_batch_gradient():
    model, data = _setup()
    before = float_state(model)
    g = torch.Generator().manual_seed(5)
    update = local_update(model, data, LocalTraining(batch_size=8, fedsgd=True), g)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(5))[:8]
    model.zero_grad()
    F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
    assert update.kind == "gradient" and update.num_examples == 8 and update.local_steps == 1
    for name, p in model.named_parameters():
        torch.testing.assert_close(update.values[name], p.grad)
        torch.testing.assert_close(update.as_delta()[name], -update.lr * p.grad)
    for k, v in float_state(model).items():  # the received model is untouched
        assert torch.equal(v, before[k])


def test_fedsgd_sends_batchnorm_buffer_changes():
    model, _ = _setup("resnet", norm="batch")
    train, _ = train_test("digits")
    update = local_update(
        model, train.subset(list(range(16))), LocalTraining(batch_size=16, fedsgd=True, lr=0.1)
    )
    assert "stem.norm.running_mean" in update.buffers
    assert "stem.norm.running_mean" not in update.values
    delta = update.as_delta()
    assert float(delta["stem.norm.running_mean"].abs().sum()) > 0  # momentum 0.1 of batch mean
    assert set(delta) == set(float_state(model))


def test_fedavg_delta_is_the_parameter_change():
    model, data = _setup()
    cfg = LocalTraining(epochs=2, batch_size=10, lr=0.1)
    update = local_update(model, data, cfg, torch.Generator().manual_seed(1))
    # replay the same SGD by hand
    net = build_model("mlp", data.image_shape, 10)
    net.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        order = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), 10):
            idx = order[i : i + 10]
            opt.zero_grad()
            F.cross_entropy(net(data.x[idx]), data.y[idx]).backward()
            opt.step()
    assert update.kind == "delta" and update.local_steps == 8 and update.num_examples == 40
    for name, p in net.named_parameters():
        torch.testing.assert_close(update.values[name], p.detach() - model.state_dict()[name])
    # the gradient view of a plain-SGD delta is the sum of the step gradients
    for k, v in update.as_gradient().items():
        torch.testing.assert_close(v, -update.values[k] / 0.1)


def test_fixed_steps_and_sign_flip():
    model, data = _setup()
    update = local_update(model, data, LocalTraining(steps=3, batch_size=4))
    assert update.local_steps == 3 and update.num_examples == 12
    client = Client(7, data, LocalTraining(steps=2), poison=SignFlip(10.0))
    honest = local_update(model, data, LocalTraining(steps=2), torch.Generator().manual_seed(0), 7)
    bad = client.train(model, torch.Generator().manual_seed(0))
    for k in honest.values:
        torch.testing.assert_close(bad.values[k], -10.0 * honest.values[k])
    assert bad.client_id == 7 and bad.metrics["poisoned"] == 1.0


def test_guard_abstains():
    model, data = _setup()
    seen = []
    client = Client(0, data, LocalTraining(steps=1), guard=lambda m: seen.append(m) or False)
    assert client.train(model, torch.Generator()) is None and seen == [model]


def test_adam_adamw_and_label_smoothing_train():
    model, data = _setup()
    x, y = data.x, data.y
    before = F.cross_entropy(model(x), y).item()
    for opts in (
        {"optimizer": "adam", "lr": 1e-3},
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "label_smoothing": 0.1},
        {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.01},
    ):
        update = local_update(model, data, LocalTraining(epochs=3, batch_size=8, **opts))
        trained = build_model("mlp", data.image_shape, 10)
        state = {k: v + update.as_delta()[k] for k, v in float_state(model).items()}
        trained.load_state_dict(state)
        assert F.cross_entropy(trained(x), y).item() < before, opts
    with pytest.raises(GradguardError):
        LocalTraining(optimizer="rmsprop")
    with pytest.raises(GradguardError):
        LocalTraining(label_smoothing=1.0)


def test_inference_mode_client_uses_running_statistics():
    model, data = _setup("resnet")
    g = torch.Generator
    train = local_update(model, data, LocalTraining(batch_size=8, fedsgd=True), g().manual_seed(1))
    infer = local_update(
        model, data, LocalTraining(batch_size=8, fedsgd=True, train_mode=False), g().manual_seed(1)
    )
    idx = torch.randperm(len(data), generator=g().manual_seed(1))[:8]
    model.eval().zero_grad()
    F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(infer.values[name], p.grad, atol=1e-6)
    assert not all(torch.allclose(train.values[k], infer.values[k]) for k in infer.values)
    assert all(float(v.abs().max()) == 0 for v in infer.buffers.values())
