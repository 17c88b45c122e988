"""Cost of each detector and of the Guard next to one local epoch on 1000 samples.

    python benchmarks/detector_cost.py [--quick] [--dataset digits|fashion-mnist]

Same model, same process: one epoch of SGD (batch 32) on 1000 samples of the data set, each
detector and three Guards (default: static checks + light ``warmup+``; ``faithful``:
static checks + the paper's 5 x 128 warm-up; ``static``) on that model. The epoch and the
checks are timed in turns, ``repeat`` rounds, and the fastest of each is kept, so a busy
machine slows both alike. resnet18 (3x32x32 input) times the static checks only.
Writes benchmarks/results/detector_cost.{json,md} (``detector_cost_<dataset>.*`` for a
data set other than digits). CPU timings on a shared machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.progress import Progress

from gradguard.data import train_test
from gradguard.detect import DETECTORS, Guard, GuardConfig, get_detector
from gradguard.detect.base import Context
from gradguard.fl import LocalTraining, local_update
from gradguard.models import build_model

OUT = Path(__file__).parent / "results"
STATIC = ("architecture", "forensics", "transmit-snr")
GUARDS = {
    "guard_static": STATIC,
    "guard_default": GuardConfig().detectors,
    "guard_faithful": STATIC + ("warmup",),
}
MODELS = [("mlp", None), ("convnet", None), ("resnet", "batch"), ("vit-tiny", None)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 rounds instead of 9")
    ap.add_argument("--dataset", default="digits", help="digits (default) or fashion-mnist")
    args = ap.parse_args()
    stem = "detector_cost" + ("" if args.dataset == "digits" else f"_{args.dataset}")
    torch.set_num_threads(1)
    repeat = 2 if args.quick else 9
    train, _ = train_test(args.dataset, limit=1000)
    rows = []
    with Progress() as bar:
        task = bar.add_task("models", total=len(MODELS) + 1)
        for name, norm in MODELS:
            torch.manual_seed(0)
            m = build_model(name, train.image_shape, 10, norm=norm)
            ctx, state = Context(m, train), m.state_dict()
            jobs = {"epoch_s": lambda m=m: local_update(m, train, LocalTraining(epochs=1))}
            for d in DETECTORS:
                det = get_detector(d)
                jobs[d] = lambda det=det, s=state, c=ctx: det.inspect(s, c)
            for label, dets in GUARDS.items():
                g = Guard(GuardConfig(detectors=dets), template=m, data=train)
                jobs[label] = lambda g=g, s=state: g.check(s)
            for fn in jobs.values():  # warm-up: first calls import and allocate
                fn()
            times = {k: [] for k in jobs}
            for _ in range(repeat):
                for k, fn in jobs.items():
                    times[k].append(timed(fn))
            row = {"model": name + (f"/{norm}" if norm else ""), "repeat": repeat}
            row.update({k: min(v) for k, v in times.items()})
            rows.append(row)
            bar.advance(task)
        m18 = build_model("resnet18", (3, 32, 32), 10)
        g = Guard(GuardConfig(detectors=STATIC), template=m18)
        s18 = m18.state_dict()
        g.check(s18)
        static18 = min(timed(lambda: g.check(s18)) for _ in range(max(5, repeat)))
        bar.advance(task)
    result = {
        "dataset": args.dataset,
        "rows": rows,
        "resnet18_static_s": static18,
        "threads": 1,
        "guards": GUARDS,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=1))
    cols = ["epoch_s", *DETECTORS, *GUARDS]
    lines = [
        f"# Detector cost vs one local epoch (1000 {args.dataset} samples, batch 32, 1 thread)",
        "",
        f"Fastest of {repeat} interleaved rounds; cells: ms (share of the epoch).",
        "guard_default = " + " + ".join(GUARDS["guard_default"]) + "; guard_faithful = "
        "static checks + the paper's warm-up (5 steps x 128 samples).",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [f"{r['epoch_s'] * 1000:.0f} ms"] + [
            f"{r[c] * 1000:.0f} ms ({r[c] / r['epoch_s']:.1%})" for c in cols[1:]
        ]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"resnet18 (3x32x32) static checks through the Guard (architecture, forensics, "
        f"transmit-snr): {static18 * 1000:.0f} ms",
    ]
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
