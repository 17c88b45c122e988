"""The ``gradguard`` command. Each subcommand is one module here with
``add_arguments(parser)`` and ``run(args) -> int``; errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import tempfile
from pathlib import Path

from gradguard.errors import GradguardError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS = {
    "train": ("gradguard.cli.train", "run an honest federated training"),
    "attack": ("gradguard.cli.attack", "run one malicious-server attack and reconstruct"),
    "scan": ("gradguard.cli.scan", "inspect a received model file for tampering"),
    "demo": ("gradguard.cli.demo", "a federation with a malicious server, unguarded vs guarded"),
}


def usage_error(msg: str) -> GradguardError:
    """A misuse of the command line: one line, exit status 2."""
    e = GradguardError(msg)
    e.exit_code = 2  # type: ignore[attr-defined]
    return e


def check_number(
    flag: str, value: float | None, low: float | None = None, *, strict: bool = True
) -> None:
    """``value`` (when given) must be finite and above ``low`` (or at least, if not strict)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise usage_error(f"{flag} must be a finite number (got {value})")
    if low is not None and (value <= low if strict else value < low):
        raise usage_error(f"{flag} must be {'>' if strict else '>='} {low:g} (got {value:g})")


def _probe(folder: Path, flag: str, target: Path) -> None:
    """Create ``folder`` if needed and write (then delete) a file there: the real test."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        reason = (
            "a parent is a file, not a folder"
            if isinstance(e, (FileExistsError, NotADirectoryError))
            else e.strerror or type(e).__name__
        )
        raise usage_error(f"{flag} {target}: cannot write there ({reason})") from None


def check_output_file(flag: str, path: str | Path | None) -> None:
    """``path`` can be written as a file: not a folder, its folder creatable and writable."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise usage_error(f"{flag} {p}: is a folder, expected a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise usage_error(f"{flag} {p}: cannot write there (read-only file)")
    _probe(p.parent, flag, p)


def check_output_dir(flag: str, path: str | Path | None) -> None:
    """``path`` is (or can be created as) a writable folder."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise usage_error(f"{flag} {p}: exists and is not a folder")
    _probe(p, flag, p)


def _available() -> dict[str, tuple[str, str]]:
    return {
        name: spec
        for name, spec in COMMANDS.items()
        if importlib.util.find_spec(spec[0]) is not None
    }


def build_parser() -> argparse.ArgumentParser:
    from gradguard import __version__

    parser = argparse.ArgumentParser(
        prog="gradguard", description="Protect federated-learning clients from malicious servers."
    )
    parser.add_argument("--version", action="version", version=f"gradguard {__version__}")
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
    except OSError as e:  # a file the work could not write or read after all (disk full, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"gradguard {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (GRADGUARD_DEBUG=1: raise)
        if os.environ.get("GRADGUARD_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        print(
            f"gradguard {args.command}: internal error: {type(e).__name__}: {first} "
            "(GRADGUARD_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
