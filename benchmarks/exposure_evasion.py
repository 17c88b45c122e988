"""Trying to evade the leakage audit as an attacker who read detect/exposure.py.

    python benchmarks/exposure_evasion.py

On a well-trained honest ``mlp`` / ``convnet`` (Fashion-MNIST, 5 epochs of SGD on 2000
samples; client data disjoint), batch 64:
- partial trap rows: ``n`` rows of the honest fc1 replaced by tuned trap rows (Boenisch et
  al.), the rest honest: no pair structure, the exposure only adds up;
  (also with the honest model as the client's last accepted one: the rise rule);
- imprint on few rows (8, 16) of the honest fc1, disguised as in benchmarks/exposure.py;
- sabotaged-class fishing: the honest head with the target class's row negated, so the
  target samples are confidently wrong (they speak) and the others confidently right
  (silent by honest means): no silencing of samples the head says are wrong.
Leakage: trap rows with the per-row decoder ``dW_i / db_i`` on a FedSGD gradient (matched
PSNR >= 30 dB); fishing with the share of the update carried by the target class.
Writes benchmarks/results/exposure_evasion.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from gradguard.attacks import get_attack
from gradguard.attacks.inversion.analytic import deduplicate, invert_rows
from gradguard.data import train_test
from gradguard.detect import get_detector
from gradguard.detect.base import Context
from gradguard.fl.client import train_sgd
from gradguard.metrics import match
from gradguard.models import build_model

OUT = Path(__file__).parent / "results"


def train(name, data, epochs=5, lr=0.05, seed=0):
    torch.manual_seed(seed)
    return train_sgd(build_model(name, data.image_shape, 10), data, epochs, lr)


def audit(model, template, data, previous=None):
    ctx = Context(template, data, previous.state_dict() if previous is not None else None)
    v = get_detector("exposure").inspect(model.state_dict(), ctx)
    e = v.metadata["exposure"]
    keys = ("exposed", "by_rows", "by_pairs", "structured_pairs", "speakers", "should_speak")
    keys += ("rise",)
    return {"flagged": v.malicious, "checks": [f.check for f in v.findings if f.flagged]} | {
        k: e[k] for k in keys
    }


def gradient(model, x, y):
    model = copy.deepcopy(model).train()
    loss = F.cross_entropy(model(x), y)
    return dict(
        zip(
            [n for n, _ in model.named_parameters()],
            torch.autograd.grad(loss, list(model.parameters())),
            strict=True,
        )
    )


def main():
    torch.set_num_threads(1)
    fm, test = train_test("fashion-mnist", limit=3000)
    server, client = fm.subset(range(2000)), fm.subset(range(2000, 3000))
    x, y = client.x[:64], client.y[:64]
    rows = []

    def add(name, r):
        rows.append({"name": name, **r})
        print(json.dumps(rows[-1]), flush=True)

    mlp = train("mlp", server)
    acc = float((mlp(client.x).argmax(1) == client.y).float().mean())
    add(f"honest mlp (5 epochs, client accuracy {acc:.2f})", audit(mlp, mlp, client))
    g = gradient(mlp, x, y)
    feats, _ = invert_rows(g["fc1.weight"], g["fc1.bias"])
    kept, _ = deduplicate(feats.clamp(0, 1), 64)
    add("honest mlp: true per-row leak", {"leaked": match(x, kept.view(-1, 1, 28, 28)).leaked()})
    trap, _ = get_attack("curious", neurons=256).manipulate(
        build_model("mlp", fm.image_shape, 10), test
    )
    for n in (16, 32, 64, 128):
        m = copy.deepcopy(mlp)
        with torch.no_grad():
            m.fc1.weight[:n] = trap.fc1.weight[:n]
            m.fc1.bias[:n] = 0
        g = gradient(m, x, y)
        feats, _ = invert_rows(g["fc1.weight"][:n], g["fc1.bias"][:n])
        kept, _ = deduplicate(feats.clamp(0, 1), 64)
        leak = match(x, kept.view(-1, 1, 28, 28)).leaked()
        add(f"{n} trap rows in the honest mlp's fc1", audit(m, mlp, client) | {"leaked": leak})
        add("  same, honest mlp as the previous model", audit(m, mlp, client, previous=mlp))
    from exposure import decode_bins, disguise_imprint  # benchmarks/exposure.py

    for bins in (8, 16):
        m, order, scale = disguise_imprint(mlp, test, bins)
        g = gradient(m, x, y)
        leak = match(x, decode_bins(g, "fc1", order, scale, fm.image_shape)).leaked()
        add(f"imprint on {bins} rows of the honest fc1", audit(m, mlp, client) | {"leaked": leak})
    conv = train("convnet", server)
    acc = float((conv(client.x).argmax(1) == client.y).float().mean())
    add(f"honest convnet (5 epochs, client accuracy {acc:.2f})", audit(conv, conv, client))
    for t in (0, 1):
        m = copy.deepcopy(conv)
        with torch.no_grad():
            m.head.weight[t] *= -1
        r = audit(m, conv, client)
        add(
            f"sabotaged-class fishing (class {t} row negated)", r | {"targets": int((y == t).sum())}
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "exposure_evasion.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
