"""Cost of every detector and of the Guard next to one local epoch on 1000 samples.

    python benchmarks/detector_cost.py [--quick] [--dataset digits|fashion-mnist]
                                       [--models mlp,convnet,resnet,vit-tiny,resnet18]

For every zoo family, one model (fresh, seed 0) and in one process: one epoch of SGD
(batch 32) on 1000 samples, every detector registered in ``gradguard.detect.DETECTORS``
(each with a new Context, as the Guard makes one per check) and three Guards: the default
(``GuardConfig()``), ``static`` (architecture, forensics, transmit-snr) and ``faithful``
(static + the paper's 5 x 128 warm-up). A detector that needs options or fails is listed
as such. The epoch and the checks are timed in turns, ``rounds`` times, and the fastest of
each is kept. Times are the process's CPU time (``time.process_time``, one torch thread):
on a machine shared with other jobs, wall time charges their time slices to whichever job
runs long enough to be preempted (the epoch more than a 1 ms check); CPU time does not,
though cache contention still slows both.

``resnet18`` needs 3x32x32 colour images: 1000 random 32x32 crops of scikit-learn's two
bundled sample photographs (offline), labelled by photograph and horizontal fifth of the
crop (10 classes), whatever ``--dataset`` says. Its epoch (about 40 s of CPU) is
extrapolated from ``R18_STEPS`` steps of 32 timed in turns with the checks
(x 1000 / (32 x steps)), in one round (the faithful warm-up alone takes 30 s).

Writes benchmarks/results/detector_cost.{json,md} (``detector_cost_<dataset>.*`` for a
data set other than digits, ``_quick`` for --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from rich.progress import Progress

from gradguard.data import Dataset, train_test
from gradguard.detect import DETECTORS, Guard, GuardConfig, get_detector
from gradguard.detect.base import Context
from gradguard.fl import LocalTraining, local_update
from gradguard.models import MODELS, build_model

OUT = Path(__file__).parent / "results"
SAMPLES = 1000
R18_STEPS = 4
STATIC = ("architecture", "forensics", "transmit-snr")


def guards() -> dict[str, tuple[str, ...]]:
    out = {"guard_default": GuardConfig().detectors, "guard_static": STATIC}
    if "warmup" in DETECTORS:
        out["guard_faithful"] = STATIC + ("warmup",)
    return out


def colour_patches(n: int = SAMPLES, size: int = 32, seed: int = 0) -> Dataset:
    """``n`` random ``size`` x ``size`` crops of scikit-learn's sample photographs."""
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(p).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for i in torch.randint(len(photos), (n,), generator=g).tolist():
        _, h, w = photos[i].shape
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        xs.append(photos[i][:, top : top + size, left : left + size])
        ys.append(i * 5 + left * 5 // (w - size + 1))
    return Dataset(torch.stack(xs).contiguous(), torch.tensor(ys), 5 * len(photos), "photo-patches")


def cpu_time(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def jobs_for(name: str, data: Dataset) -> tuple[dict, dict[str, str], dict]:
    """(label -> callable, label -> why it is not timed, facts about the Guard's verdict)."""
    torch.manual_seed(0)
    model = build_model(name, data.image_shape, data.num_classes)
    state = model.state_dict()
    jobs: dict = {}
    if name == "resnet18":
        train = LocalTraining(epochs=1, steps=R18_STEPS)
    else:
        train = LocalTraining(epochs=1)
    jobs["epoch"] = lambda: local_update(model, data, train)
    skipped: dict[str, str] = {}
    for d in DETECTORS:
        try:
            det = get_detector(d)
            det.inspect(state, Context(model, data))  # warm-up call; a failure is reported
        except Exception as e:  # noqa: BLE001 - a detector that needs options or fails
            skipped[d] = f"{type(e).__name__}: {e}"[:120]
            continue
        jobs[d] = lambda det=det: det.inspect(state, Context(model, data))
    facts = {}
    for label, dets in guards().items():
        g = Guard(GuardConfig(detectors=dets), template=model, data=data)
        v = g.check(state)
        facts[label] = {"malicious": v.malicious, "ran": v.detector}
        jobs[label] = lambda g=g: g.check(state)
    return jobs, skipped, facts


def measure(name: str, data: Dataset, rounds: int) -> dict:
    jobs, skipped, facts = jobs_for(name, data)  # has called every check once
    jobs["epoch"]()  # first calls import and allocate
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, fn in jobs.items():
            times[k].append(cpu_time(fn))
    best = {k: min(v) for k, v in times.items()}
    scale = SAMPLES / (32 * R18_STEPS) if name == "resnet18" else 1.0
    best["epoch"] *= scale
    return {
        "model": name + ("/batch" if name == "resnet" else ""),
        "data": data.name,
        "rounds": rounds,
        "epoch_extrapolated_from_steps": R18_STEPS if name == "resnet18" else None,
        "seconds": best,
        "not_timed": skipped,
        "guard_verdicts": facts,
    }


def table(rows: list[dict], args, rounds: int) -> list[str]:
    checks = list(dict.fromkeys(k for r in rows for k in r["seconds"] if k != "epoch"))
    checks += [d for d in DETECTORS if d not in checks]
    head = "| check | " + " | ".join(r["model"] for r in rows) + " |"
    lines = [
        f"# Detector cost vs one local epoch ({SAMPLES} samples, batch 32, 1 thread)",
        "",
        f"`python benchmarks/detector_cost.py --dataset {args.dataset}"
        + (" --quick" if args.quick else "")
        + "`. Data: "
        + ", ".join(sorted({f"{r['model']}: {r['data']}" for r in rows}))
        + ".",
        "",
        f"Process CPU time, fastest of {rounds} interleaved rounds after one untimed call "
        f"(resnet18: one round, its epoch extrapolated from {R18_STEPS} steps of 32); "
        "cells: ms (share of the epoch). "
        "guard_default = `GuardConfig()` = " + " + ".join(guards()["guard_default"]) + "; "
        "guard_static = " + " + ".join(STATIC) + "; guard_faithful = static + the paper's "
        "warm-up (5 steps x 128 samples).",
        "",
        head,
        "|---|" + "---|" * len(rows),
        "| epoch | " + " | ".join(f"{r['seconds']['epoch'] * 1e3:.0f} ms" for r in rows) + " |",
    ]
    for c in checks:
        cells = []
        for r in rows:
            s = r["seconds"]
            if c in s:
                cells.append(f"{s[c] * 1e3:.1f} ms ({s[c] / s['epoch']:.1%})")
            else:
                cells.append("not timed" if c in r["not_timed"] else "-")
        name = f"**{c}**" if c == "guard_default" else c
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = {f"{d}: {why}" for r in rows for d, why in r["not_timed"].items()}
    flagged = [
        f"{r['model']} {g}" for r in rows for g, f in r["guard_verdicts"].items() if f["malicious"]
    ]
    lines += ["", "Not timed: " + ("; ".join(sorted(notes)) if notes else "none") + "."]
    if flagged:
        lines.append(
            "Guards that flagged the fresh model (they stop early, so their time is a floor): "
            + ", ".join(flagged)
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 rounds instead of 9")
    ap.add_argument("--dataset", default="digits", help="digits (default) or fashion-mnist")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo families")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds = 2 if args.quick else 9
    names = [m for m in MODELS if m in args.models.split(",")]
    train, _ = train_test(args.dataset, limit=SAMPLES)
    load = [os.getloadavg()[0]]
    rows = []
    with Progress() as bar:
        task = bar.add_task("models", total=len(names))
        for name in names:
            if name == "resnet18":
                rows.append(measure(name, colour_patches(), 1))
            else:
                rows.append(measure(name, train, rounds))
            bar.advance(task)
    load.append(os.getloadavg()[0])
    stem = "detector_cost" + ("" if args.dataset == "digits" else f"_{args.dataset}")
    stem += "_quick" if args.quick else ""
    if set(names) != set(MODELS):
        stem += "_" + "-".join(names)
    lines = table(rows, args, rounds)
    lines.append(f"Load average (1 min) at start and end: {load[0]:.1f}, {load[1]:.1f} (2 cores).")
    result = {
        "dataset": args.dataset,
        "samples": SAMPLES,
        "rounds": rounds,
        "timer": "time.process_time",
        "threads": 1,
        "guards": guards(),
        "load_average": load,
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
