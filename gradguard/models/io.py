"""Model files: written as safetensors, read without ever unpickling arbitrary objects.

A model file may come from a hostile server. :func:`load_state` reads safetensors, or a
PyTorch state_dict through ``torch.load(weights_only=True)``; anything else, or any file
that fails to parse, raises :class:`ModelFileError` with one clear message.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
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


# dtypes a model file may hold (safetensors names and torch dtypes)
SAFE_DTYPES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
TORCH_DTYPES = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
}
MAX_HEADER_BYTES = 100 * 1024**2
MAX_TENSORS = 100_000
MAX_ELEMENTS = 2**31  # per file


def check_safetensors_header(path: Path, size: int) -> None:
    """Validate a safetensors header before the library allocates anything."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path}: truncated (no safetensors header)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n + 8 > size:
            raise ModelFileError(f"{path}: safetensors header of {n} bytes does not fit the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a mapping")
    data = size - 8 - n
    total = 0
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise ModelFileError(f"{path}: {len(header)} tensors exceed the {MAX_TENSORS} limit")
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ModelFileError(f"{path}: entry {name!r} is malformed")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFE_DTYPES:
            raise ModelFileError(f"{path}: {name!r} has unsupported dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(d, int) and 0 <= d < 2**40 for d in shape)
        ):
            raise ModelFileError(f"{path}: {name!r} has an invalid shape {shape!r}")
        count = math.prod(shape)
        total += count
        if count > MAX_ELEMENTS or total > MAX_ELEMENTS:
            raise ModelFileError(f"{path}: {name!r} declares {count} elements: absurd size")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data
            or offsets[1] - offsets[0] != count * SAFE_DTYPES[dtype]
        ):
            raise ModelFileError(
                f"{path}: {name!r} has data offsets {offsets!r} that do not "
                f"match its shape {shape} and the file's size"
            )


def _check_zip(path: Path) -> None:
    """A PyTorch zip archive must not inflate beyond the size cap (no zip bombs)."""
    try:
        with zipfile.ZipFile(path) as z:
            inflated = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable PyTorch archive ({e})") from None
    if inflated > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: archive inflates to {inflated} bytes, over the limit")


def load_state(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a weights-only PyTorch file.

    Fails with one :class:`ModelFileError` on anything unsafe or malformed: files over the
    size cap, safetensors headers with unknown dtypes, absurd or inconsistent shapes,
    PyTorch pickles holding anything but tensors (``weights_only=True``; no code runs),
    zip archives that inflate beyond the cap, non-tensor or unsupported-dtype entries.
    Finiteness is the detectors' job (a NaN is a verdict, not a parse error).
    """
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    size = path.stat().st_size
    if size > limit:
        raise ModelFileError(f"{path}: {size} bytes exceeds the {limit} byte limit")
    with path.open("rb") as f:
        head = f.read(8)
    is_zip = head[:4] == b"PK\x03\x04"
    try:
        if not is_zip and (
            path.suffix == ".safetensors"
            or (len(head) == 8 and 0 < int.from_bytes(head, "little") < size)
        ):
            check_safetensors_header(path, size)
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            if is_zip:
                _check_zip(path)
            with warnings.catch_warnings():  # hostile files may use other pickle protocols
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - every parse failure of an untrusted file is one error
        first = str(e).splitlines()[0][:200] if str(e).strip() else "unreadable"
        raise ModelFileError(
            f"{path}: not a readable model file ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(f"{path}: expected a mapping of names to tensors")
    for k, v in state.items():
        if v.dtype not in TORCH_DTYPES or v.layout != torch.strided or v.is_quantized:
            raise ModelFileError(f"{path}: {k!r} has unsupported type {v.dtype} ({v.layout})")
    if sum(v.numel() for v in state.values()) > MAX_ELEMENTS:
        raise ModelFileError(f"{path}: more than {MAX_ELEMENTS} values: absurd size")
    return state
