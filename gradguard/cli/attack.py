"""``gradguard attack NAME``: run one client round against a manipulated model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gradguard.attacks import ATTACKS, attack_class
from gradguard.bench import attack_round
from gradguard.cli import curious_client as curious_cli

WIDTH_OPTIONS = ("bins", "neurons")  # options that set a layer's width
MAX_WIDTH = 65536


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME", help=f"the attack: {', '.join(ATTACKS)}, {curious_cli.NAME}"
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (embedded), fashion-mnist, mnist or a path (default: digits)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model from the zoo (default: mlp, or the first model the attack applies to)",
    )
    parser.add_argument("--norm", default=None, help="norm layers for resnet models")
    parser.add_argument("--batch-size", type=int, default=64, help="client batch (default 64)")
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="clients in the round, each with its own batch (default 1)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an attack option, e.g. --option bins=256 or --option iterations=300 (repeatable)",
    )
    parser.add_argument("--bins", type=int, default=None, help="shorthand for --option bins=N")
    parser.add_argument(
        "--neurons", type=int, default=None, help="shorthand for --option neurons=N"
    )
    parser.add_argument(
        "--measurement", default=None, help="shorthand for --option measurement=NAME"
    )
    parser.add_argument(
        "--local-steps",
        type=int,
        default=1,
        metavar="E",
        help="1 = FedSGD gradient; E > 1 = FedAvg delta after E SGD steps",
    )
    parser.add_argument("--lr", type=float, default=0.05, help="client learning rate (FedAvg)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--psnr-threshold",
        type=float,
        default=30.0,
        help="an image is leaked at this matched PSNR or more (default 30 dB)",
    )
    parser.add_argument(
        "--save-model",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the manipulated global model (safetensors)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a PNG grid: originals above reconstructions",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    curious_cli.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from gradguard.cli import check_number, check_output_dir, check_output_file, usage_error

    if args.name == curious_cli.NAME:  # a client attacking its peers: its own runner
        return curious_cli.run(args)
    if args.name not in ATTACKS:
        raise usage_error(f"unknown attack {args.name!r}; valid: {', '.join(ATTACKS)}")
    if args.model is None:  # the attack's own model when it does not apply to mlp
        models = attack_class(args.name).models
        args.model = "mlp" if models is None or "mlp" in models else models[0]
    if args.name == "seer":  # a learned attack: scored over many held-out batches
        from gradguard.experiments.seer import run_cli

        return run_cli(args)
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--clients", args.clients),
        ("--bins", args.bins),
        ("--neurons", args.neurons),
        ("--local-steps", args.local_steps),
    ):
        check_number(flag, value, 1, strict=False)
    check_number("--lr", args.lr, 0)
    check_number("--psnr-threshold", args.psnr_threshold)
    check_output_file("--save-model", args.save_model)
    check_output_dir("--out", args.out)
    options = attack_options(args)
    result = attack_round.run_attack(
        args.name,
        dataset=args.dataset,
        model=args.model,
        norm=args.norm,
        batch_size=args.batch_size,
        local_steps=args.local_steps,
        lr=args.lr,
        seed=args.seed,
        psnr_threshold=args.psnr_threshold,
        clients=args.clients,
        **options,
    )
    summary = result.summary()
    written = []
    if args.save_model is not None:
        from gradguard.models.io import save_state

        written.append(save_state(result.manipulated, args.save_model))
    if args.out is not None:
        from gradguard.viz import save_reconstruction_grid

        png = (
            args.out / f"{args.name}_{_slug(args.dataset)}_{args.model}_b{args.batch_size}"
            f"_e{args.local_steps}.png"
        )
        title = (
            f"{args.name} on {args.model}/{args.dataset}, batch {args.batch_size}: "
            f"{result.leaked_fraction:.0%} leaked (>= {args.psnr_threshold:g} dB)"
        )
        written.append(
            save_reconstruction_grid(
                result.originals,
                result.reconstruction.images,
                result.match,
                png,
                threshold_db=args.psnr_threshold,
                title=title,
            )
        )
    scan_hint = _scan_command(args, options, written[0]) if args.save_model is not None else ""
    if args.json:
        print(json.dumps(summary))
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        if scan_hint:
            print(f"scan it as the client would: {scan_hint}", file=sys.stderr)
    else:
        leaked = sum(k.leaked for k in result.leaks)
        clients = f"{args.clients} clients x " if args.clients > 1 else ""
        print(
            f"{args.name} on {args.model}/{args.dataset}, {clients}batch {args.batch_size}, "
            f"{'FedSGD' if args.local_steps == 1 else f'FedAvg {args.local_steps} steps'}: "
            f"leaked {leaked}/{args.clients * args.batch_size} "
            f"({result.leaked_fraction:.1%}) at >= {args.psnr_threshold:g} dB; "
            f"PSNR {result.psnr_mean:.1f} dB, SSIM {result.ssim_mean:.3f} (matched pairs), "
            f"{result.seconds:.2f} s"
        )
        for path in written:
            print(f"wrote {path}")
        if scan_hint:
            print(f"scan it as the client would: {scan_hint}")
    return 0


def _slug(dataset: str) -> str:
    """A data set name or path as one file-name part (the last path component)."""
    name = Path(dataset.rstrip("/\\")).name or "data"
    return "".join(c if c.isalnum() or c in "-." else "-" for c in name)


def _scan_command(args: argparse.Namespace, options: dict, path: Path) -> str:
    """The ``gradguard scan`` line whose template is the model this attack manipulated
    (the attack widens the first layer: the client's model has that width)."""
    import shlex

    from gradguard.attacks import get_attack

    kwargs = get_attack(args.name, batch_size=args.batch_size, **options).model_kwargs(args.model)
    parts = ["gradguard", "scan", str(path), "--model", args.model]
    if args.norm:
        parts += ["--norm", args.norm]
    if "width" in kwargs:
        parts += ["--width", str(kwargs["width"])]
    if args.dataset != "digits":
        parts += ["--dataset", args.dataset]
    return shlex.join(parts)


def attack_options(args: argparse.Namespace) -> dict:
    """The attack's options from ``--option KEY=VALUE`` (and its shorthands), each checked
    against the attack's constructor before any work starts."""
    from gradguard.attacks import attack_class, get_attack
    from gradguard.attacks.base import check_options
    from gradguard.cli import usage_error
    from gradguard.errors import GradguardError
    from gradguard.options import parse_pairs

    shorthands = (("bins", args.bins), ("neurons", args.neurons), ("measurement", args.measurement))
    options = {k: v for k, v in shorthands if v is not None}
    try:
        parsed = parse_pairs(args.option)
    except GradguardError as e:
        raise usage_error(f"--option: {e}") from None
    options.update({k.replace("-", "_"): v for k, v in parsed.items()})
    for key in WIDTH_OPTIONS:  # each one widens a layer: a huge value is a huge allocation
        if isinstance(options.get(key), int) and not 1 <= options[key] <= MAX_WIDTH:
            raise usage_error(f"{key} must be between 1 and {MAX_WIDTH} (got {options[key]})")
    try:
        check_options(args.name, attack_class(args.name), options)
        get_attack(args.name, batch_size=args.batch_size, **dict(options))
    except GradguardError as e:
        raise usage_error(f"--{e}" if str(e).startswith("option ") else str(e)) from None
    except (TypeError, ValueError, AssertionError) as e:
        raise usage_error(f"attack {args.name!r} refuses its options: {e}") from None
    return options
