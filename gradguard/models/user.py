"""The client's own model class, ``package.module:Class``, imported from its own code.

The class is looked up only under the folder the client names (``code_path``): a module
of that name found anywhere else (installed packages, the standard library, gradguard
itself) is refused, so a template is never silently taken from code that is not the
client's.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Any

from torch import nn

from gradguard.errors import GradguardError
from gradguard.options import OptionError, parse_pairs


def is_user_spec(name: str) -> bool:
    """``package.module:Class`` (the client's own class), not a zoo name."""
    return ":" in name


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as keyword arguments; values are Python literals (``64``,
    ``0.5``, ``True``, ``(1, 8, 8)``, ``'relu'``) or else plain strings."""
    try:
        kwargs = parse_pairs(items, _literal)
    except OptionError as e:
        raise GradguardError(f"--model-arg: {e}") from None
    bad = [k for k in kwargs if not k.isidentifier()]
    if bad:
        raise GradguardError(f"--model-arg wants KEY=VALUE with a Python name, got {bad[0]!r}")
    return kwargs


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_user_model(spec: str, code_path: str | Path | None, kwargs: dict[str, Any]) -> nn.Module:
    """``Class(**kwargs)`` for ``spec`` = ``package.module:Class`` found under ``code_path``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise GradguardError(f"--model {spec!r}: expected package.module:Class")
    if code_path is None:
        raise GradguardError(
            f"--model {spec}: name the folder holding your code with --model-path DIR "
            "(the class is imported only from there)"
        )
    root = Path(code_path).expanduser().resolve()
    if not root.is_dir():
        raise GradguardError(f"--model-path {code_path}: not a folder")
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    if loaded is not None and not _under(loaded, root):
        raise GradguardError(
            f"--model {spec}: {top!r} is already imported from {_where(loaded)}, not from "
            f"{root}; rename your package"
        )
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise GradguardError(
            f"--model {spec}: cannot import {module_name} from {root} ({e})"
        ) from None
    except Exception as e:  # noqa: BLE001 - the client's own code failed on import
        raise GradguardError(
            f"--model {spec}: importing {module_name} raised {type(e).__name__}: {e}"
        ) from None
    finally:
        sys.path.remove(str(root))
    if not _under(module, root):
        raise GradguardError(
            f"--model {spec}: {module_name} was found at {_where(module)}, outside {root}"
        )
    cls = getattr(module, attr, None)
    if cls is None:
        raise GradguardError(f"--model {spec}: {module_name} has no {attr!r}")
    try:
        model = cls(**kwargs)
    except Exception as e:  # noqa: BLE001 - wrong keyword arguments and the like
        raise GradguardError(
            f"--model {spec}: {attr}(**{kwargs!r}) raised {type(e).__name__}: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise GradguardError(
            f"--model {spec}: {attr} built a {type(model).__name__}, not an nn.Module"
        )
    return model


def _where(module) -> str:
    return str(getattr(module, "__file__", None) or "(built in)")


def _under(module, root: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(root)
