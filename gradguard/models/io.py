"""Model files: written as safetensors, read without ever unpickling arbitrary objects.

A model file may come from a hostile server. :func:`load_state` reads safetensors, or a
PyTorch state_dict through ``torch.load(weights_only=True)``; anything else, or any file
that fails to parse, raises :class:`ModelFileError` with one clear message.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gradguard.errors import ModelFileError

MAX_FILE_BYTES = 2 * 1024**3


def save_state(model: nn.Module | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a model's state (or a state dict) as safetensors."""
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else model
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))
    return path


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a weights-only PyTorch file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: {size} bytes exceeds the {MAX_FILE_BYTES} byte limit")
    with path.open("rb") as f:
        head = f.read(8)
    try:
        if path.suffix == ".safetensors" or (len(head) == 8 and
                                             int.from_bytes(head, "little") < size):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every parse failure of an untrusted file is one error
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else 'unreadable'})") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelFileError(f"{path}: expected a mapping of names to tensors")
    return state
