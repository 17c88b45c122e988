"""How much of a round the simulation itself costs, outside local training and aggregation.

Each round's wall time splits into local training (every client, including its model copy),
aggregation math, test-set evaluation, and the rest: sampling, dispatching models through the
server hook, applying the aggregate, bookkeeping (``RoundResult.overhead_seconds``). The
target is overhead < 10% of the round. Writes ``benchmarks/results/round_overhead{,_quick}``.

    python benchmarks/round_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from gradguard.data import partition, train_test
from gradguard.data.idx import system_dir
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
from gradguard.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def measure(
    dataset: str,
    model: str,
    clients: int,
    rounds: int,
    limit: int | None,
    aggregator: str,
    secure: bool,
) -> dict:
    torch.manual_seed(0)
    train, test = train_test(dataset, limit=limit)
    local = LocalTraining(epochs=1, batch_size=16, lr=0.05, momentum=0.9)
    parts = partition(train, clients, "iid")
    fed = Federation(
        build_model(model, train.image_shape, train.num_classes),
        [Client(i, p, local) for i, p in enumerate(parts)],
        test,
        FederationConfig(
            rounds=rounds, training=local, aggregator=aggregator, secure_aggregation=secure
        ),
    )
    history = fed.run(progress=True)
    tot = {
        k: sum(getattr(r, k) for r in history)
        for k in (
            "seconds",
            "train_seconds",
            "aggregate_seconds",
            "eval_seconds",
            "overhead_seconds",
        )
    }
    return {
        "dataset": dataset,
        "model": model,
        "clients": clients,
        "rounds": rounds,
        "train_examples": len(train),
        "test_examples": len(test),
        "aggregator": aggregator + (" (secure)" if secure else ""),
        **tot,
        "overhead_fraction": tot["overhead_seconds"] / tot["seconds"],
        "eval_fraction": tot["eval_seconds"] / tot["seconds"],
        "final_accuracy": history[-1].accuracy,
        "per_round": [r.as_dict() for r in history],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setups = [
        ("digits", "mlp", 5, 10, None, "mean", False),
        ("digits", "mlp", 5, 10, None, "krum", False),
        ("digits", "mlp", 5, 10, None, "mean", True),
    ]
    if system_dir("fashion-mnist") is not None:
        setups.append(
            (
                "fashion-mnist",
                "convnet",
                10,
                2 if args.quick else 3,
                2000 if args.quick else 6000,
                "mean",
                False,
            )
        )
    if args.quick:
        setups = [(d, m, c, min(r, 3), lim, a, s) for d, m, c, r, lim, a, s in setups]
    rows = []
    for s in setups:
        rows.append(measure(*s))
        r = rows[-1]
        print(
            f"{r['dataset']}/{r['model']} {r['aggregator']}: overhead "
            f"{100 * r['overhead_fraction']:.2f}% of {r['seconds']:.1f} s, eval "
            f"{100 * r['eval_fraction']:.2f}%",
            flush=True,
        )
    name = "round_overhead" + ("_quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {
                "setup": {
                    "threads": args.threads,
                    "machine": platform.machine(),
                    "torch": torch.__version__,
                    "local": "1 epoch, batch 16, lr 0.05, m 0.9",
                },
                "runs": rows,
            },
            indent=1,
        )
    )
    lines = [
        "# Round overhead: time outside local training and aggregation math",
        "",
        "Sums over all rounds; one CPU thread on a shared 2-core machine (noisy). "
        "`overhead` = round - training - aggregation - evaluation; evaluation of the "
        "global model on the test set is listed on its own.",
        "",
        "| data / model | clients | train ex. | rounds | aggregator | round s | train s | "
        "aggregate s | eval s | overhead s | overhead % | overhead+eval % |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} / {r['model']} | {r['clients']} | {r['train_examples']} | "
            f"{r['rounds']} | {r['aggregator']} | {r['seconds']:.2f} | {r['train_seconds']:.2f} | "
            f"{r['aggregate_seconds']:.3f} | {r['eval_seconds']:.3f} | "
            f"{r['overhead_seconds']:.3f} | {100 * r['overhead_fraction']:.2f} | "
            f"{100 * (r['overhead_fraction'] + r['eval_fraction']):.2f} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
