"""``gradguard attack NAME``: run one client round against a manipulated model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from gradguard.attacks import ATTACKS

WIDTH_OPTIONS = ("bins", "neurons")  # options that set a layer's width
MAX_WIDTH = 65536


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help=f"the attack: {', '.join(ATTACKS)}")
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (embedded), fashion-mnist, mnist or a path (default: digits)",
    )
    parser.add_argument("--model", default="mlp", help="model from the zoo (default: mlp)")
    parser.add_argument("--norm", default=None, help="norm layers for resnet models")
    parser.add_argument("--batch-size", type=int, default=64, help="client batch (default 64)")
    parser.add_argument(
        "--bins", type=int, default=None, help="imprint bins (first linear layer width)"
    )
    parser.add_argument("--neurons", type=int, default=None, help="curious trap rows")
    parser.add_argument(
        "--measurement", default=None, help="imprint measurement: brightness, random or dct"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other attack option, e.g. --option iterations=300 (repeatable)",
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


def run(args: argparse.Namespace) -> int:
    from gradguard.attacks.run import run_attack
    from gradguard.cli import check_number, check_output_dir, check_output_file, usage_error

    if args.name not in ATTACKS:
        raise usage_error(f"unknown attack {args.name!r}; valid: {', '.join(ATTACKS)}")
    if args.name == "seer":  # a learned attack: scored over many held-out batches
        from gradguard.experiments.seer import run_cli

        return run_cli(args)
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--bins", args.bins),
        ("--neurons", args.neurons),
        ("--local-steps", args.local_steps),
    ):
        check_number(flag, value, 1, strict=False)
    check_number("--lr", args.lr, 0)
    check_number("--psnr-threshold", args.psnr_threshold)
    check_output_file("--save-model", args.save_model)
    check_output_dir("--out", args.out)
    options = {
        k: v
        for k, v in (
            ("bins", args.bins),
            ("neurons", args.neurons),
            ("measurement", args.measurement),
        )
        if v is not None
    }
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise usage_error(f"--option wants KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = _parse(value.strip())
    for key in WIDTH_OPTIONS:  # each one widens a layer: a huge value is a huge allocation
        if isinstance(options.get(key), int) and not 1 <= options[key] <= MAX_WIDTH:
            raise usage_error(f"{key} must be between 1 and {MAX_WIDTH} (got {options[key]})")
    _check_options(args.name, args.batch_size, options)
    result = run_attack(
        args.name,
        dataset=args.dataset,
        model=args.model,
        norm=args.norm,
        batch_size=args.batch_size,
        local_steps=args.local_steps,
        lr=args.lr,
        seed=args.seed,
        psnr_threshold=args.psnr_threshold,
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
            args.out / f"{args.name}_{args.dataset}_{args.model}_b{args.batch_size}"
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
    if args.json:
        print(json.dumps(summary))
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    else:
        print(
            f"{args.name} on {args.model}/{args.dataset}, batch {args.batch_size}, "
            f"{'FedSGD' if args.local_steps == 1 else f'FedAvg {args.local_steps} steps'}: "
            f"leaked {result.match.leaked(args.psnr_threshold)}/{args.batch_size} "
            f"({result.leaked_fraction:.1%}) at >= {args.psnr_threshold:g} dB; "
            f"PSNR {result.psnr_mean:.1f} dB, SSIM {result.ssim_mean:.3f} (matched pairs), "
            f"{result.seconds:.2f} s"
        )
        for path in written:
            print(f"wrote {path}")
    return 0


def _check_options(name: str, batch_size: int, options: dict) -> None:
    """Each option must exist and have its default's type (int, float, bool or str), and the
    attack must accept them: checked before any work starts."""
    import inspect

    from gradguard.attacks.run import build_attack
    from gradguard.cli import usage_error
    from gradguard.errors import GradguardError

    module, cls = ATTACKS[name].split(":")
    import importlib

    params = inspect.signature(getattr(importlib.import_module(module), cls)).parameters
    for key, value in options.items():
        if key not in params:
            valid = ", ".join(p for p in params if p != "self") or "none"
            raise usage_error(f"attack {name!r} has no option {key!r}; valid: {valid}")
        default = params[key].default
        kind = type(default)
        if default is None or default is inspect.Parameter.empty:
            continue
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind)
            if kind is str
            else True
        )
        if not ok:
            raise usage_error(
                f"--option {key}={value!r}: expected {kind.__name__} (default {default!r})"
            )
        if kind in (int, float) and not math.isfinite(value):
            raise usage_error(f"--option {key}={value!r}: expected a finite number")
    try:
        build_attack(name, batch_size, **dict(options))
    except GradguardError as e:
        raise usage_error(str(e)) from None
    except (TypeError, ValueError, AssertionError) as e:
        raise usage_error(f"attack {name!r} refuses its options: {e}") from None


def _parse(value: str):
    """``3`` -> int, ``0.5`` -> float, ``true``/``false`` -> bool, else the string."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
