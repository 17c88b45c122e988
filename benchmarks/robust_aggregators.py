"""Robust aggregators against Byzantine clients sending scaled sign-flipped updates.

10 clients on Fashion-MNIST, 2 of them send ``-scale`` times their honest FedAvg delta
(``gradguard.fl.byzantine.SignFlip``); the same federation runs under the weighted mean,
coordinate-wise median, trimmed mean (Yin et al. 2018), Krum and Multi-Krum (Blanchard et al.
2017), plus an attack-free mean as the reference. Writes
``benchmarks/results/robust_aggregators{,_quick}.{json,md}``.

    python benchmarks/robust_aggregators.py [--quick] [--model mlp|convnet]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from gradguard.data import partition, train_test
from gradguard.data.idx import system_dir
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
from gradguard.fl.byzantine import SignFlip
from gradguard.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(aggregator: str, poisoned: int, args, train, test) -> dict:
    torch.manual_seed(args.seed)
    local = LocalTraining(epochs=1, batch_size=args.batch_size, lr=args.lr, momentum=0.9)
    parts = partition(train, args.clients, "iid", seed=args.seed)
    clients = [
        Client(i, p, local, poison=SignFlip(args.scale) if i < poisoned else None)
        for i, p in enumerate(parts)
    ]
    model = build_model(args.model, train.image_shape, train.num_classes)
    config = FederationConfig(
        rounds=args.rounds,
        training=local,
        aggregator=aggregator,
        byzantine=args.byzantine,
        seed=args.seed,
    )
    start = time.perf_counter()
    history = Federation(model, clients, test, config).run(progress=True)
    return {
        "aggregator": aggregator,
        "poisoned": poisoned,
        "final_accuracy": history[-1].accuracy,
        "accuracy_per_round": [r.accuracy for r in history],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds on 2,000 examples")
    p.add_argument("--model", default="mlp", choices=("mlp", "convnet"))
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--limit", type=int, default=30000, help="training examples used")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--poisoned", type=int, default=2)
    p.add_argument("--byzantine", type=int, default=2, help="f given to Krum / trimmed mean")
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--aggregators",
        default="mean,median,trimmed,krum,multikrum",
        help="comma-separated rules to run with the Byzantine clients",
    )
    p.add_argument("--no-reference", action="store_true", help="skip the attack-free mean")
    p.add_argument("--name", default=None, help="results file stem")
    args = p.parse_args()
    if args.quick:
        args.limit, args.rounds = 2000, 3
    if args.dataset == "fashion-mnist" and system_dir("fashion-mnist") is None:
        raise SystemExit(
            "dataset-fashion-mnist is not installed (apt-get install "
            "dataset-fashion-mnist), or pass --dataset digits"
        )
    torch.set_num_threads(args.threads)
    train, test = train_test(args.dataset, limit=args.limit, seed=args.seed)
    rows = [] if args.no_reference else [run_one("mean", 0, args, train, test)]
    for agg in args.aggregators.split(","):
        rows.append(run_one(agg, args.poisoned, args, train, test))
        print(
            f"{agg:10s} poisoned={args.poisoned} final accuracy "
            f"{rows[-1]['final_accuracy']:.4f} ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    name = args.name or "robust_aggregators" + ("_quick" if args.quick else "")
    setup = dict(vars(args))
    setup.update(
        train_examples=len(train),
        test_examples=len(test),
        partition="iid",
        local="1 epoch, momentum 0.9",
        machine=platform.machine(),
        torch=torch.__version__,
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"setup": setup, "runs": rows}, indent=1))
    lines = [
        f"# Robust aggregators vs {args.poisoned} of {args.clients} clients sending "
        f"-{args.scale:g}x their update",
        "",
        f"{args.dataset}, {args.model}, {len(train)} training examples (seeded subset) split "
        f"IID over {args.clients} clients, {args.rounds} rounds of 1 local epoch "
        f"(batch {args.batch_size}, lr {args.lr}, momentum 0.9), f = {args.byzantine}; "
        f"accuracy on the {len(test)} test images. Seconds are wall time on a shared "
        "machine (noisy).",
        "",
        "| aggregator | Byzantine clients | final accuracy | seconds |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['aggregator']} | {r['poisoned']} | {r['final_accuracy']:.4f} | {r['seconds']:.0f} |"
        for r in rows
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
