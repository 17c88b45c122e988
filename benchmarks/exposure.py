"""Leakage audit (detect/exposure.py) on honest models, attacks and disguised attacks.

    python benchmarks/exposure.py [--quick]

Honest: FedAvg global models (rounds 0-3, IID, 5 clients) of mlp, convnet, resnet/batch,
resnet/group and vit-tiny on digits, and mlp / convnet trained by FedAvg on 2000
Fashion-MNIST samples. Attacks, on Fashion-MNIST batches of 64 (client data disjoint from
the server's auxiliary data): imprint and trap weights as published and disguised (per-row
noise, shuffled rows, honest-looking per-row scales, part of an honest trained layer,
binomial sign counts), class fishing with zeroed or 1e-2-scaled non-target rows and
feature fishing. Leakage of the analytic attacks is measured with the attacks' own
decoders on a real FedSGD gradient of a client batch (matched PSNR >= 30 dB); fishing's
leakage is given as the share of the update carried by the target samples (D-SNR).
Writes benchmarks/results/exposure.{json,md} (``--report`` rewrites the Markdown from
the JSON).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from gradguard.attacks import get_attack
from gradguard.attacks.inversion.analytic import deduplicate, invert_bins, invert_rows
from gradguard.data import partition, train_test
from gradguard.detect import get_detector
from gradguard.detect.base import Context
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
from gradguard.metrics import match
from gradguard.models import build_model

OUT = Path(__file__).parent / "results"
BATCH = 64


def fedavg(name, data, test, rounds, norm=None, seed=0, lr=0.05, **kw):
    """Global models of an honest IID FedAvg run (round 0 = initial)."""
    torch.manual_seed(seed)
    model = build_model(name, data.image_shape, data.num_classes, norm=norm, **kw)
    training = LocalTraining(epochs=1, lr=lr)
    clients = [Client(i, p, training) for i, p in enumerate(partition(data, 5, "iid", seed=seed))]
    fed = Federation(model, clients, test, FederationConfig(rounds=rounds, training=training))
    states = [copy.deepcopy(model)]
    for r in range(1, rounds + 1):
        fed.round(r)
        states.append(copy.deepcopy(model))
    return states


def gradient(model, x, y):
    """The FedSGD update of one batch (mean loss, training mode), name -> gradient."""
    model = copy.deepcopy(model).train()
    loss = F.cross_entropy(model(x), y)
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in model.named_parameters()])
    return dict(zip(names, grads, strict=True))


def leaked(true, candidates):
    """Distinct candidates matched to the true batch, count at >= 30 dB."""
    if len(candidates) == 0:
        return 0
    kept, _ = deduplicate(candidates.clamp(0, 1), limit=len(true))
    return match(true, kept.reshape(len(kept), *true.shape[1:])).leaked(30.0)


def decode_bins(g, layer, order, scale, shape):
    dw, db = g[f"{layer}.weight"] / scale[:, None], g[f"{layer}.bias"] / scale
    feats, _ = invert_bins(dw, db, order, limit=BATCH)
    return feats.reshape(len(feats), *shape)


def decode_rows(g, layer, shape):
    feats, _ = invert_rows(g[f"{layer}.weight"], g[f"{layer}.bias"])
    return feats.reshape(len(feats), *shape)


@torch.no_grad()
def disguise_imprint(model, aux, bins, rows=None, noise=0.035, seed=0):
    """Imprint on ``rows`` of fc1 (all when None) with per-row noise, shuffled rows and
    honest-looking per-row scales; fc2 columns of the imprinted rows share one direction
    at honest scale. Returns the model and the attacker's (order, per-row scale)."""
    g = torch.Generator().manual_seed(seed)
    src, _ = get_attack("imprint", bins=bins).manipulate(
        build_model("mlp", aux.image_shape, 10, width=bins), aux
    )
    m = copy.deepcopy(model)
    width = m.fc1.out_features
    rows = torch.randperm(width, generator=g)[:bins] if rows is None else rows
    w, b = src.fc1.weight.clone(), src.fc1.bias.clone()
    norm = w.norm(dim=1, keepdim=True)
    w += noise * norm * torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5
    alpha = torch.empty(bins).uniform_(0.5, 2.0, generator=g)  # honest-looking row scales
    honest_norm = float(model.fc1.weight.norm(dim=1).mean())
    alpha = alpha * honest_norm / float(norm.mean())
    m.fc1.weight[rows] = w * alpha[:, None]
    m.fc1.bias[rows] = b * alpha
    v = m.fc2.weight[:, rows].abs().mean(1, keepdim=True) + 0.01
    beta = torch.empty(bins).uniform_(0.5, 2.0, generator=g)
    m.fc2.weight[:, rows] = v * beta[None, :]
    m.fc2.bias.abs_()
    scale = torch.ones(width)
    scale[rows] = beta
    # attacker's order: rows by ascending threshold; rows not imprinted are left out
    order = rows[torch.argsort(-b)]  # bias = -q / s: ascending q is descending bias
    return m, order, scale


@torch.no_grad()
def binomial_trap(model, seed=0):
    """Trap rows whose count of negative weights is binomial (smallest entries flipped)."""
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model)
    w = m.fc1.weight
    n = w.shape[1]
    for i in range(len(w)):
        want = int(torch.binomial(torch.tensor(float(n)), torch.tensor(0.5), generator=g))
        neg = int((w[i] < 0).sum())
        k = want - neg
        small = torch.argsort(w[i].abs())
        # flip the signs of the |k| smallest entries of the sign in excess
        idx = small[w[i][small] > 0][:k] if k > 0 else small[w[i][small] < 0][:-k]
        w[i, idx] = -w[i, idx]
    return m


@torch.no_grad()
def fishing_scaled(model, target=0, factor=1e-2, bias=1000.0):
    """Class fishing whose non-target rows are the honest ones scaled by ``factor``."""
    from gradguard.attacks.inversion.labels import last_linear

    m = copy.deepcopy(model)
    _, head = last_linear(m)
    others = torch.arange(head.out_features) != target
    head.weight[others] *= factor
    head.bias[others] = bias
    return m


def audit(model, template, data, previous=None):
    det = get_detector("exposure")
    t0 = time.perf_counter()
    v = det.inspect(model.state_dict(), Context(template, data, previous))
    e = v.metadata.get("exposure", {})
    return {
        "flagged": v.malicious,
        "checks": [f.check for f in v.findings if f.flagged],
        "exposed": e.get("exposed"),
        "rows": e.get("by_rows"),
        "pairs": e.get("by_pairs"),
        "structured": e.get("structured_pairs"),
        "layer": e.get("layer"),
        "speakers": round(e.get("speakers", 0), 2),
        "should": round(e.get("should_speak", 0), 2),
        "silencing": round(e.get("should_speak", 0) / max(e.get("speakers", 1e-9), 1e-9), 2),
        "rise": e.get("rise"),
        "ms": round((time.perf_counter() - t0) * 1000),
    }


def report(rows) -> None:
    lines = [
        "# Leakage audit (detect/exposure.py): honest models, attacks, disguises",
        "",
        "Probe batch 64 of the client's data. exposed = samples some known decoder returns at",
        ">= 30 dB (rows / pairs; structured = pairs cancelling >= 8x the sample's signal on",
        "4+ classes); speakers = effective samples below the head; silencing = the head's",
        "effective erring samples / speakers; rise = exposed share above the previous model.",
        "leaked: analytic attacks, images the attack's own decoder returns at >= 30 dB on a",
        "FedSGD gradient of a client batch of 64; fishing, the D-SNR at batch 64.",
        "",
        "| kind | model | flagged by | exposed | rows | pairs | structured | speakers | "
        "silencing | rise | leaked | ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "flagged" not in r:
            lines.append(f"| {r['kind']} | {r['name']} | | | | | | | | | {r['leaked']} | |")
            continue
        rise = "" if r["rise"] is None else f"{r['rise']:.3f}"
        lines.append(
            f"| {r['kind']} | {r['name']} | {', '.join(r['checks']) or '-'} | {r['exposed']} | "
            f"{r['rows']} | {r['pairs']} | {r['structured']} | {r['speakers']} | "
            f"{r['silencing']} | {rise} | {'' if r['leaked'] is None else r['leaked']} | "
            f"{r['ms']} |"
        )
    (OUT / "exposure.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", action="store_true", help="rewrite the Markdown from the JSON")
    args = ap.parse_args()
    if args.report:
        report(json.loads((OUT / "exposure.json").read_text()))
        return
    torch.set_num_threads(1)
    rows = []

    def add(kind, name, r, leak=None):
        r = {"kind": kind, "name": name, **r, "leaked": leak}
        rows.append(r)
        print(json.dumps(r), flush=True)

    # honest corpus on digits
    digits, dtest = train_test("digits", limit=1500)
    local = digits.subset(range(300))
    fams = [
        ("mlp", None),
        ("convnet", None),
        ("resnet", "batch"),
        ("resnet", "group"),
        ("vit-tiny", None),
    ]
    if args.quick:
        fams = fams[:2]
    for name, norm in fams:
        states = fedavg(name, digits, dtest, 2 if args.quick else 4, norm)
        for r, m in enumerate(states):
            prev = states[r - 1].state_dict() if r else None
            add(
                "honest",
                f"digits {name}{'/' + norm if norm else ''} round {r}",
                audit(m, states[0], local, prev),
            )
    # Fashion-MNIST: honest and attacked
    fm, ftest = train_test("fashion-mnist", limit=3000)
    client = fm.subset(range(2000, 3000))
    server = fm.subset(range(2000))
    x, y = client.x[:BATCH], client.y[:BATCH]
    shape = fm.image_shape
    for name in ("mlp", "convnet"):
        states = fedavg(name, server, ftest, 2 if args.quick else 5, lr=0.1)
        for r, m in enumerate(states):
            prev = states[r - 1].state_dict() if r else None
            add("honest", f"fmnist {name} round {r}", audit(m, states[0], client, prev))
        if name == "mlp":
            honest_mlp = states
    h = honest_mlp[-1]
    tmpl = honest_mlp[0]
    g = gradient(h, x, y)
    add("honest", "fmnist mlp trained: true row leak", {}, leaked(x, decode_rows(g, "fc1", shape)))
    # published imprint
    fresh = build_model("mlp", shape, 10)
    imp, sec = get_attack("imprint", bins=256).manipulate(fresh, ftest)
    g = gradient(imp, x, y)
    add(
        "attack",
        "imprint 256 (published)",
        audit(imp, fresh, client),
        leaked(x, decode_bins(g, "fc1", sec.order, torch.ones(256), shape)),
    )
    # disguised imprint, whole layer (noise, shuffle, scales)
    m, order, scale = disguise_imprint(h, ftest, 256)
    g = gradient(m, x, y)
    add(
        "disguise",
        "imprint 256 noisy 3.5% shuffled scaled",
        audit(m, tmpl, client, h.state_dict()),
        leaked(x, decode_bins(g, "fc1", order, scale, shape)),
    )
    for bins in (32, 64, 128):
        m, order, scale = disguise_imprint(h, ftest, bins)
        g = gradient(m, x, y)
        add(
            "disguise",
            f"imprint {bins} rows of trained fc1 (noisy, shuffled, scaled)",
            audit(m, tmpl, client, h.state_dict()),
            leaked(x, decode_bins(g, "fc1", order, scale, shape)),
        )
    # trap weights
    wide = build_model("mlp", shape, 10, width=1000)
    cur, csec = get_attack("curious", neurons=1000).manipulate(wide, ftest)
    leak = (
        get_attack("curious", neurons=1000)
        .reconstruct(
            __import__("gradguard.fl.update", fromlist=["Update"]).Update(
                gradient(cur, x, y), BATCH, 1, 1.0, kind="gradient"
            ),
            csec,
        )
        .images
    )
    add("attack", "curious 1000 (published)", audit(cur, wide, client), match(x, leak).leaked())
    bt = binomial_trap(cur)
    g = gradient(bt, x, y)
    add(
        "disguise",
        "curious 1000 binomial signs",
        audit(bt, wide, client),
        leaked(x, decode_rows(g, "fc1", shape)),
    )
    cur2, _ = get_attack("curious", neurons=256).manipulate(fresh, ftest)
    g = gradient(cur2, x, y)
    add(
        "attack", "curious 256", audit(cur2, fresh, client), leaked(x, decode_rows(g, "fc1", shape))
    )
    # fishing on a trained convnet (head)
    hc = states[-1]
    from gradguard.detect.dsnr import DSNR

    for label, fished in (
        (
            "fishing-class (published, bias 1000)",
            get_attack("fishing-class", target_class=0).manipulate(hc, ftest)[0],
        ),
        ("fishing-class non-target rows x1e-2", fishing_scaled(hc)),
        (
            "fishing-feature m=16",
            get_attack("fishing-feature", train_steps=0).manipulate(hc, ftest)[0],
        ),
    ):
        dsnr = DSNR(batch=BATCH).inspect(fished.state_dict(), Context(hc, client)).findings[0].value
        add("attack", label, audit(fished, hc, client), round(dsnr, 3))
    OUT.mkdir(exist_ok=True)
    (OUT / "exposure.json").write_text(json.dumps(rows, indent=1))
    report(rows)


if __name__ == "__main__":
    main()
