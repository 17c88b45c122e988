"""Cost of each detector and of the Guard next to one local epoch on 1000 samples.

    python benchmarks/detector_cost.py [--quick]

Same model, same process: one epoch of SGD (batch 32) on 1000 digits samples, then each
detector and the default Guard on the trained model. resnet18 (3x32x32 input) times the
static checks only. Writes benchmarks/results/detector_cost.{json,md}. CPU timings on a
shared machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gradguard.data import Dataset, train_test
from gradguard.detect import DETECTORS, Guard, GuardConfig, get_detector
from gradguard.detect.base import Context
from gradguard.fl import LocalTraining, local_update
from gradguard.models import build_model

OUT = Path(__file__).parent / "results"
STATIC = ("architecture", "forensics", "transmit-snr")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeat = 1 if args.quick else 3
    train, _ = train_test("digits", limit=1000)
    models = [("mlp", None), ("convnet", None), ("resnet", "batch"), ("vit-tiny", None)]
    rows = []
    for name, norm in models:
        torch.manual_seed(0)
        m = build_model(name, train.image_shape, 10, norm=norm)
        epoch = best(lambda m=m: local_update(m, train, LocalTraining(epochs=1)), repeat)
        ctx, state = Context(m, train), m.state_dict()
        row = {"model": name + (f"/{norm}" if norm else ""), "epoch_s": epoch}
        for d in DETECTORS:
            det = get_detector(d)
            det.inspect(state, ctx)
            row[d] = best(lambda det=det, s=state, c=ctx: det.inspect(s, c), repeat)
        for label, dets in (
            ("guard_default", GuardConfig().detectors),
            ("guard_plus", STATIC + ("warmup+",)),
            ("guard_static", STATIC),
        ):
            g = Guard(GuardConfig(detectors=dets), template=m, data=train)
            g.check(state)
            row[label] = best(lambda g=g, s=state: g.check(s), repeat)
        rows.append(row)
    m18 = build_model("resnet18", (3, 32, 32), 10)
    g = Guard(GuardConfig(detectors=STATIC), template=m18)
    x = Dataset(torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long), 10, "rand")
    g.check(m18.state_dict())
    static18 = best(lambda: g.check(m18.state_dict()), repeat)
    del x
    result = {"rows": rows, "resnet18_static_s": static18, "threads": 1}
    OUT.mkdir(exist_ok=True)
    (OUT / "detector_cost.json").write_text(json.dumps(result, indent=1))
    cols = ["epoch_s", *DETECTORS, "guard_static", "guard_plus", "guard_default"]
    lines = [
        "# Detector cost vs one local epoch (1000 digits samples, batch 32, 1 thread)",
        "",
        "| model | " + " | ".join(cols) + " | default Guard / epoch |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | "
            + " | ".join(f"{r[c] * 1000:.0f} ms" for c in cols)
            + f" | {r['guard_default'] / r['epoch_s']:.0%} |"
        )
    lines += [
        "",
        f"resnet18 (3x32x32) static checks (architecture, forensics, transmit-snr): "
        f"{static18 * 1000:.0f} ms",
    ]
    (OUT / "detector_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
