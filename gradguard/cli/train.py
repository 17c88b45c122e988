"""``gradguard train``: an honest federated training run, with optional Byzantine clients."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import torch

from gradguard.errors import GradguardError

AGGREGATOR_NAMES = ("mean", "krum", "multikrum", "median", "trimmed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gradguard.models import MODELS, NORMS

    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    d = parser.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default="digits",
        help="digits | fashion-mnist | mnist | PATH (IDX folder, CIFAR batches, image folder)",
    )
    d.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="keep a seeded random subset of N training examples",
    )
    d.add_argument("--clients", type=int, default=5, metavar="N", help="number of clients")
    d.add_argument(
        "--partition", default="iid", metavar="SCHEME", help="iid | dirichlet:ALPHA | shards:K"
    )
    m = parser.add_argument_group("model")
    m.add_argument("--model", default="mlp", help=f"one of: {', '.join(MODELS)}")
    m.add_argument("--norm", default=None, help=f"for resnet/resnet18: {', '.join(NORMS)}")
    t = parser.add_argument_group("training")
    t.add_argument("--rounds", type=int, default=10, metavar="R")
    t.add_argument(
        "--clients-per-round",
        type=int,
        default=None,
        metavar="K",
        help="clients sampled each round (default: all)",
    )
    t.add_argument("--local-epochs", type=int, default=1, metavar="E")
    t.add_argument(
        "--local-steps",
        type=int,
        default=None,
        metavar="S",
        help="exactly S local SGD steps instead of E epochs",
    )
    t.add_argument(
        "--fedsgd", action="store_true", help="FedSGD: each client sends one gradient on one batch"
    )
    t.add_argument("--batch-size", type=int, default=16, metavar="B")
    t.add_argument("--lr", type=float, default=0.03, help="client learning rate")
    t.add_argument("--momentum", type=float, default=0.9, help="client SGD momentum")
    t.add_argument("--server-lr", type=float, default=1.0)
    a = parser.add_argument_group("aggregation and privacy")
    a.add_argument("--aggregator", default="mean", help=" | ".join(AGGREGATOR_NAMES))
    a.add_argument(
        "--byzantine",
        type=int,
        default=None,
        metavar="F",
        help="Byzantine clients the robust aggregators tolerate "
        "(default: the number of --poisoned clients)",
    )
    a.add_argument(
        "--poisoned",
        type=int,
        default=0,
        metavar="N",
        help="the first N clients send -SCALE times their honest update",
    )
    a.add_argument("--poison-scale", type=float, default=10.0, metavar="SCALE")
    a.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="pairwise-masked sum: the server sees only the aggregate",
    )
    a.add_argument(
        "--dp-clip",
        type=float,
        default=None,
        metavar="C",
        help="client-level DP: clip each update to L2 norm C",
    )
    a.add_argument(
        "--dp-noise",
        type=float,
        default=0.0,
        metavar="Z",
        help="client-level DP: Gaussian noise of std Z*C per coordinate",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument(
        "--save-model",
        default=None,
        metavar="FILE",
        help="write the final global model as safetensors",
    )
    o.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (progress stays on stderr)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="T",
        help="PyTorch CPU threads (small-batch training gains little from more, and "
        "loses much on a busy machine); 0: PyTorch's default",
    )


@dataclass(frozen=True)
class TrainSetup:
    """Everything ``run`` builds from the flags (re-used by benchmarks)."""

    federation: object
    train_size: int
    test_size: int
    image_shape: tuple[int, int, int]
    num_classes: int
    num_parameters: int


def _check(args: argparse.Namespace) -> None:
    """Every flag checked before any data is read (one line, exit 2 on a misuse)."""
    from gradguard.cli import check_number, check_output_file, usage_error

    def positive(name: str, value: float | None) -> None:
        check_number(f"--{name}", value, 0)

    for name in ("momentum", "dp_noise"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.rounds > 100_000 or args.clients > 100_000:
        raise usage_error("--rounds and --clients must be at most 100000")

    for name in (
        "clients",
        "rounds",
        "local_epochs",
        "batch_size",
        "lr",
        "server_lr",
        "clients_per_round",
        "local_steps",
        "dp_clip",
        "limit",
        "poison_scale",
    ):
        positive(name.replace("_", "-"), getattr(args, name))
    if args.aggregator not in AGGREGATOR_NAMES:
        raise usage_error(
            f"unknown aggregator {args.aggregator!r}; valid: {', '.join(AGGREGATOR_NAMES)}"
        )
    if args.dp_noise < 0:
        raise usage_error(f"--dp-noise must be >= 0 (got {args.dp_noise})")
    if args.dp_noise > 0 and args.dp_clip is None:
        raise usage_error("--dp-noise needs --dp-clip (the noise is scaled by the clip)")
    if args.threads < 0:
        raise usage_error(f"--threads must be >= 0 (got {args.threads})")
    if not 0 <= args.momentum < 1:
        raise usage_error(f"--momentum must be in [0, 1) (got {args.momentum})")
    if not 0 <= args.poisoned <= args.clients:
        raise usage_error(f"--poisoned must be between 0 and --clients ({args.clients})")
    byz = args.poisoned if args.byzantine is None else args.byzantine
    if byz < 0 or 2 * byz >= args.clients:
        raise usage_error(
            f"--byzantine {byz}: robust aggregation needs fewer than half of "
            f"the {args.clients} clients to be Byzantine"
        )
    if args.clients_per_round is not None and args.clients_per_round > args.clients:
        raise usage_error(
            f"--clients-per-round {args.clients_per_round} exceeds --clients {args.clients}"
        )
    check_output_file("--save-model", args.save_model)


def build(args: argparse.Namespace) -> TrainSetup:
    """Data, partition, model, clients and federation from the parsed flags."""
    from gradguard.data import partition, train_test
    from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
    from gradguard.fl.byzantine import SignFlip
    from gradguard.fl.dp import ClientDP
    from gradguard.models import build_model

    _check(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, test = train_test(args.dataset, limit=args.limit, seed=args.seed)
    parts = partition(train, args.clients, args.partition, seed=args.seed)
    model = build_model(args.model, train.image_shape, train.num_classes, norm=args.norm)
    local = LocalTraining(
        epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        steps=args.local_steps,
        fedsgd=args.fedsgd,
    )
    poison = SignFlip(args.poison_scale)
    clients = [
        Client(i, part, local, poison=poison if i < args.poisoned else None)
        for i, part in enumerate(parts)
    ]
    config = FederationConfig(
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        training=local,
        aggregator=args.aggregator,
        byzantine=args.poisoned if args.byzantine is None else args.byzantine,
        secure_aggregation=args.secure_aggregation,
        dp=ClientDP(args.dp_clip, args.dp_noise) if args.dp_clip is not None else None,
        server_lr=args.server_lr,
        seed=args.seed,
    )
    fed = Federation(model, clients, test, config)
    return TrainSetup(
        fed,
        len(train),
        len(test),
        train.image_shape,
        train.num_classes,
        sum(p.numel() for p in model.parameters()),
    )


def run(args: argparse.Namespace) -> int:
    setup = build(args)
    fed = setup.federation
    start = time.perf_counter()
    history = fed.run(progress=not args.no_progress)
    total = time.perf_counter() - start
    if args.save_model:
        from gradguard.models.io import save_state

        try:
            save_state(fed.model, args.save_model)
        except OSError as e:
            raise GradguardError(f"{args.save_model}: cannot write the model ({e})") from None
    summary = {
        "dataset": args.dataset,
        "model": args.model,
        "norm": args.norm,
        "clients": args.clients,
        "clients_per_round": args.clients_per_round,
        "partition": args.partition,
        "rounds": [r.as_dict() for r in history],
        "final_accuracy": history[-1].accuracy,
        "total_seconds": total,
        "train_examples": setup.train_size,
        "test_examples": setup.test_size,
        "parameters": setup.num_parameters,
        "aggregator": args.aggregator,
        "poisoned": args.poisoned,
        "secure_aggregation": args.secure_aggregation,
        "dp": None if args.dp_clip is None else {"clip": args.dp_clip, "noise": args.dp_noise},
        "local": {
            "epochs": args.local_epochs,
            "steps": args.local_steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "momentum": args.momentum,
            "fedsgd": args.fedsgd,
        },
        "seed": args.seed,
        "saved_model": args.save_model,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
        return 0
    _print_table(summary)
    return 0


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"gradguard train: {summary['dataset']} / {summary['model']}, "
        f"{summary['clients']} clients, {summary['partition']}, "
        f"{summary['aggregator']}"
    )
    for col in ("round", "accuracy", "seconds", "train s", "aggregate s", "overhead s"):
        table.add_column(col, justify="right")
    for r in summary["rounds"]:
        table.add_row(
            str(r["round"]),
            f"{r['accuracy']:.4f}",
            f"{r['seconds']:.2f}",
            f"{r['train_seconds']:.2f}",
            f"{r['aggregate_seconds']:.3f}",
            f"{r['overhead_seconds']:.3f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"final accuracy {summary['final_accuracy']:.4f} in "
        f"{summary['total_seconds']:.1f} s"
        + (f"; model written to {summary['saved_model']}" if summary["saved_model"] else "")
    )
