"""Every detector's findings on honest and attacked models, to prove a refactor changed none.

    python benchmarks/detector_findings.py --out A.json      # record (any checkout)
    python benchmarks/detector_findings.py --compare A.json B.json

Records, for each model of a fixed corpus (honest ``mlp``, ``convnet``, ``resnet/batch``,
``resnet/group``, ``vit-tiny`` after one epoch on digits, fresh ones, ``resnet18``; imprint,
imprint-arch, curious, fishing-class and fishing-feature on each family they apply to;
malformed states: a zero row, a NaN, an extra entry, a wrong shape), the verdict of every
registered detector and of the default Guard (stopping at the first flag and running all):
each finding's check, layer, value, threshold, flag and message, the score and the numbers
in the metadata. ``--compare`` demands equal flags, checks, layers and messages and values
equal to ``--rtol`` (1e-6), and exits 1 on any difference. Performance work on the
detectors (benchmarks/detector_cost.py) is checked with it: record before, record after.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from gradguard.attacks import get_attack
from gradguard.data import train_test
from gradguard.detect import DETECTORS, Guard, GuardConfig, get_detector
from gradguard.detect.base import Context, _jsonable
from gradguard.fl.client import train_sgd
from gradguard.models import build_model


def trained(name, data, norm=None, epochs=1, **kw):
    """An honest model after ``epochs`` of plain SGD (batch 32, lr 0.05), seed 0."""
    torch.manual_seed(0)
    m = build_model(name, data.image_shape, data.num_classes, norm=norm, **kw)
    return train_sgd(m, data, epochs)


def corpus(quick: bool):
    """(label, template, received state) triples."""
    train, test = train_test("digits")
    server, aux = train.subset(range(300)), test
    families = [("mlp", None, {"width": 64}), ("convnet", None, {"width": 64})]
    if not quick:
        families += [("resnet", "batch", {}), ("resnet", "group", {}), ("vit-tiny", None, {})]
    attacks = [
        ("imprint", {"bins": 64}),
        ("imprint-arch", {"bins": 64}),
        ("curious", {"neurons": 64}),
        ("fishing-class", {}),
        ("fishing-feature", {"train_steps": 20}),
    ]
    for name, norm, kw in families:
        label = name + (f"/{norm}" if norm else "")
        honest = trained(name, server, norm, **kw)
        torch.manual_seed(1)
        fresh = build_model(name, server.image_shape, 10, norm=norm, **kw)
        yield f"{label} honest", honest, honest.state_dict()
        yield f"{label} fresh", fresh, fresh.state_dict()
        for attack, opts in attacks:
            try:
                model, _ = get_attack(attack, **opts).manipulate(honest, aux)
            except Exception as e:  # noqa: BLE001 - an attack that does not apply
                print(f"skip {label} {attack}: {e}", file=sys.stderr)
                continue
            yield f"{label} {attack}", honest, model.state_dict()
            if attack == "imprint":  # rows near the twin-row cliff (cosine 0.999)
                for noise in (0.01, 0.035):
                    state = {k: v.clone() for k, v in model.state_dict().items()}
                    w = state["fc1.weight"]
                    scale = noise * w.norm(dim=1, keepdim=True) / w.shape[1] ** 0.5
                    w += scale * torch.randn_like(w)
                    yield f"{label} imprint+noise{noise}", honest, state
    honest = trained("mlp", server, width=64)
    state = {k: v.clone() for k, v in honest.state_dict().items()}
    state["fc1.weight"][3] = 0.0
    yield "mlp zero-row", honest, state
    state = {k: v.clone() for k, v in honest.state_dict().items()}
    state["fc2.weight"][1, 2] = math.nan
    yield "mlp nan", honest, state
    yield "mlp extra", honest, {**honest.state_dict(), "fc0.weight": torch.ones(4, 4)}
    yield "mlp shape", honest, {**honest.state_dict(), "fc2.bias": torch.zeros(3)}
    if not quick:
        torch.manual_seed(2)
        m18 = build_model("resnet18", (3, 32, 32), 10)
        yield "resnet18 fresh", m18, m18.state_dict()


def record(quick: bool) -> dict:
    torch.set_num_threads(1)
    train, _ = train_test("digits", limit=1000)
    out = {}
    for label, template, state in corpus(quick):
        data = None if label.startswith("resnet18") else train  # 3x32x32: no local data
        ctx = Context(template, data)
        row = {}
        for name in DETECTORS:
            try:
                det = get_detector(name)
            except Exception as e:  # noqa: BLE001
                row[name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            if det.needs_data and data is None:
                continue
            try:
                row[name] = _jsonable(det.inspect(state, ctx).to_dict())
            except Exception as e:  # noqa: BLE001
                row[name] = {"error": f"{type(e).__name__}: {e}"}
        prev = {k: v.clone() for k, v in template.state_dict().items()}
        for tag, cfg in (
            ("guard", GuardConfig()),
            ("guard-all", GuardConfig(stop_at_first=False)),
            (
                "guard-previous",
                GuardConfig(stop_at_first=False, options={"warmup+": {"use_previous": True}}),
            ),
        ):
            guard = Guard(cfg, template=template, data=data)
            row[tag] = _jsonable(guard.check(state, prev).to_dict())
        out[label] = row
        print(label, {k: v.get("malicious") for k, v in row.items()}, file=sys.stderr)
    return out


def _numbers(obj, path=""):
    """Flatten to path -> leaf (elapsed times dropped)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "elapsed_s":
                yield from _numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, obj


def _same(a, b, rtol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)):
        return a == b
    if not isinstance(b, (int, float)):
        return False
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))


def compare(a: dict, b: dict, rtol: float) -> int:
    bad = inexact = numbers = 0
    for label in sorted(a.keys() | b.keys()):
        if label not in a or label not in b:
            print(f"{label}: only in one record")
            bad += 1
            continue
        for det in sorted(a[label].keys() | b[label].keys()):
            x = dict(_numbers(a[label].get(det, {})))
            y = dict(_numbers(b[label].get(det, {})))
            if x.keys() != y.keys():
                print(f"{label} / {det}: different fields {sorted(x.keys() ^ y.keys())[:5]}")
                bad += 1
                continue
            diff = [k for k in x if not _same(x[k], y[k], rtol)]
            numbers += len(x)
            inexact += sum(x[k] != y[k] and _same(x[k], y[k], rtol) for k in x)
            for k in diff[:3]:
                print(f"{label} / {det}{k}: {x[k]!r} != {y[k]!r}")
            bad += bool(diff)
    n = sum(len(v) for v in a.values())
    print(
        f"{n} verdicts on {len(a)} models compared ({numbers} fields): {bad} differ "
        f"(rtol {rtol}); {inexact} fields equal only within rtol, the rest bit for bit"
    )
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--quick", action="store_true", help="mlp and convnet only")
    ap.add_argument("--rtol", type=float, default=1e-6)
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        sys.exit(compare(a, b, args.rtol))
    result = record(args.quick)
    if args.out:
        args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
