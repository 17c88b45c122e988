"""The ``gradguard`` command. Each subcommand is one module here with
``add_arguments(parser)`` and ``run(args) -> int``; errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gradguard.errors import GradguardError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS = {
    "train": ("gradguard.cli.train", "run an honest federated training"),
    "attack": ("gradguard.cli.attack", "run one malicious-server attack and reconstruct"),
    "scan": ("gradguard.cli.scan", "inspect a received model file for tampering"),
    "demo": ("gradguard.cli.demo", "a federation with a malicious server, unguarded vs guarded"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {
        name: spec
        for name, spec in COMMANDS.items()
        if importlib.util.find_spec(spec[0]) is not None
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradguard", description="Protect federated-learning clients from malicious servers."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(_available()[args.command][0])
    try:
        return int(module.run(args) or 0)
    except GradguardError as e:
        print(f"gradguard {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
