"""Model files: written as safetensors, read without ever unpickling arbitrary objects.

A model file may come from a hostile server. :func:`load_state` reads safetensors, or a
PyTorch zip archive through ``torch.load(weights_only=True, mmap=True)``; anything else, or
any file that fails to parse, raises :class:`ModelFileError` with one clear message.

Memory is bounded by bytes on real storage, checked before anything is materialised: a
safetensors header must tile the file's data exactly (no overlapping or missing bytes); a
PyTorch archive must be stored uncompressed (no zip bombs) and is memory-mapped, then every
tensor must be a dense, non-overlapping view inside its storage (no zero strides that turn a
4-byte storage into 2^31 elements). In all, a file's tensors may hold at most
``LIMIT_FACTOR`` times the larger of the file's size and the client's model's size.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gradguard.errors import ModelFileError

MAX_FILE_BYTES = 2 * 1024**3
# A file's tensors (numel x itemsize, summed) may hold at most this multiple of the larger of
# the file's size and the template's size (tied weights share one storage: 2 keys, 1 copy).
LIMIT_FACTOR = 2
# The oldest PyTorch whose weights_only loader has no known bypass (CVE-2025-32434 below 2.6)
# nor memory-corruption bugs (CVE-2026-24747 below 2.10).
MIN_TORCH = "2.10"


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
MAX_HEADER_BYTES = 16 * 1024**2
MAX_TENSORS = 100_000
MAX_ELEMENTS = 2**31  # per file


def state_bytes(state: Mapping[str, torch.Tensor] | nn.Module | None) -> int:
    """Bytes the tensors of ``state`` (or a model's state) hold: numel x itemsize, summed."""
    if state is None:
        return 0
    if isinstance(state, nn.Module):
        state = state.state_dict()
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))


def view_problem(t: torch.Tensor) -> str:
    """Why tensor ``t`` is not a dense view inside its own storage ('' if it is).

    Rejects zero strides and overlapping strides (an expanded view whose numel x itemsize
    exceeds the bytes really stored) and views reaching beyond their storage.
    """
    if t.device.type == "meta":
        return "is a meta tensor (no data)"
    if t.numel() == 0:
        return ""
    dims = sorted(
        ((s, st) for s, st in zip(t.shape, t.stride(), strict=True) if s > 1), key=lambda p: p[1]
    )
    reach = 0  # elements spanned by the dims seen so far, minus one
    for size, stride in dims:
        if stride <= 0:
            return f"has a zero stride: an expanded view of {t.numel()} elements"
        if stride <= reach:
            return f"has overlapping strides {tuple(t.stride())}: an expanded view"
        reach += (size - 1) * stride
    end = (t.storage_offset() + reach + 1) * t.element_size()
    if t.storage_offset() < 0 or end > t.untyped_storage().nbytes():
        return "reaches beyond its storage"
    return ""


def max_entries(template: Mapping[str, torch.Tensor] | nn.Module | None) -> int:
    """How many tensors a received state may name: twice the template's, plus slack."""
    if template is None:
        return MAX_TENSORS
    n = len(template.state_dict() if isinstance(template, nn.Module) else template)
    return min(MAX_TENSORS, 2 * n + 64)


def check_safetensors_header(path: Path, size: int, limit: int = MAX_TENSORS) -> None:
    """Validate a safetensors header before the library allocates anything: known dtypes,
    sane shapes, and data offsets that tile the data section exactly (each byte once)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path}: truncated (no safetensors header)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n + 8 > size:
            raise ModelFileError(f"{path}: safetensors header of {n} bytes does not fit the file")
        try:
            header = json.loads(f.read(n), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as e:
            raise ModelFileError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a mapping")
    data = size - 8 - n
    total = 0
    header.pop("__metadata__", None)
    if len(header) > limit:
        raise ModelFileError(f"{path}: {len(header)} tensors exceed the limit of {limit}")
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ModelFileError(f"{path}: entry {name!r} is malformed")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFE_DTYPES:
            raise ModelFileError(f"{path}: {name!r} has unsupported dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(type(d) is int and 0 <= d < 2**40 for d in shape)
        ):
            raise ModelFileError(f"{path}: {name!r} has an invalid shape {shape!r}")
        count = math.prod(shape)
        total += count
        if count > MAX_ELEMENTS or total > MAX_ELEMENTS:
            raise ModelFileError(f"{path}: {name!r} declares {count} elements: absurd size")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data
            or offsets[1] - offsets[0] != count * SAFE_DTYPES[dtype]
        ):
            raise ModelFileError(
                f"{path}: {name!r} has data offsets {offsets!r} that do not "
                f"match its shape {shape} and the file's size"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for lo, hi, name in sorted(spans):
        if lo != end:
            raise ModelFileError(
                f"{path}: {name!r} starts at byte {lo}, expected {end}: overlapping or "
                "gapped tensor data"
            )
        end = hi
    if end != data:
        raise ModelFileError(f"{path}: {data - end} bytes after the last tensor's data")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys")
    return dict(pairs)


def _check_zip(path: Path, size: int, limit: int = MAX_TENSORS) -> None:
    """A PyTorch archive must be stored uncompressed (as ``torch.save`` writes it): then it
    cannot inflate beyond its own size (no zip bombs), and it can be memory-mapped."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ModelFileError(f"{path}: not a readable PyTorch archive ({e})") from None
    if len(infos) > limit + 16:
        raise ModelFileError(f"{path}: {len(infos)} archive entries exceed the limit")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ModelFileError(f"{path}: the archive holds duplicate entry names")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise ModelFileError(f"{path}: not a PyTorch archive (no data.pkl)")
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED or i.compress_size != i.file_size:
            raise ModelFileError(
                f"{path}: archive entry {i.filename!r} is compressed "
                f"({i.compress_size} -> {i.file_size} bytes); torch.save stores entries "
                "uncompressed, so this file was crafted"
            )
    if sum(i.file_size for i in infos) > size:
        raise ModelFileError(f"{path}: archive entries declare more bytes than the file holds")


def require_safe_torch() -> None:
    """Refuse to unpickle with a PyTorch whose weights-only loader is known to be unsafe."""
    from torch.torch_version import TorchVersion

    if TorchVersion(torch.__version__) < MIN_TORCH:
        raise ModelFileError(
            f"PyTorch {torch.__version__} cannot read .pt files safely (weights_only loader "
            f"bypasses, CVE-2025-32434 and CVE-2026-24747): install torch>={MIN_TORCH} or use "
            "safetensors files"
        )


def _load_pt(path: Path) -> object:
    require_safe_torch()
    with warnings.catch_warnings():  # hostile files may use other pickle protocols
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_state(
    path: str | Path,
    max_bytes: int | None = None,
    template: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a weights-only PyTorch zip archive.

    Fails with one :class:`ModelFileError` on anything unsafe or malformed: files over the
    size cap, safetensors headers with unknown dtypes, absurd or inconsistent shapes or
    overlapping data, PyTorch pickles holding anything but tensors (``weights_only=True``; no
    code runs), compressed or legacy (non-zip) PyTorch files, expanded or overlapping tensor
    views, tensors holding more than ``LIMIT_FACTOR`` x max(file size, ``template``'s size)
    bytes, non-tensor or unsupported-dtype entries. Finiteness is the detectors' job (a NaN is
    a verdict, not a parse error). The tensors returned are fresh copies (no file mapping).
    """
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    size = path.stat().st_size
    if size > limit:
        raise ModelFileError(f"{path}: {size} bytes exceeds the {limit} byte limit")
    budget = min(limit, LIMIT_FACTOR * max(size, state_bytes(template)))
    with path.open("rb") as f:
        head = f.read(8)
    is_zip = head[:4] == b"PK\x03\x04"
    try:
        if not is_zip and (
            path.suffix == ".safetensors"
            or (len(head) == 8 and 0 < int.from_bytes(head, "little") < size)
        ):
            check_safetensors_header(path, size, max_entries(template))
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif is_zip:
            _check_zip(path, size, max_entries(template))
            state = _load_pt(path)
        else:
            raise ModelFileError(
                f"{path}: neither safetensors nor a PyTorch zip archive (legacy .pt files "
                "are not read: re-save with torch.save or as safetensors)"
            )
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
    if len(state) > max_entries(template):
        raise ModelFileError(
            f"{path}: {len(state)} tensors exceed the limit of {max_entries(template)}"
        )
    total = 0
    for k, v in state.items():
        if v.dtype not in TORCH_DTYPES or v.layout != torch.strided or v.is_quantized:
            raise ModelFileError(f"{path}: {k!r} has unsupported type {v.dtype} ({v.layout})")
        bad = view_problem(v)
        if bad:
            raise ModelFileError(f"{path}: {k!r} {bad}")
        total += v.numel() * v.element_size()
        if total > budget:
            raise ModelFileError(
                f"{path}: its tensors hold more than {budget} bytes ({LIMIT_FACTOR} x the "
                "larger of the file's and the client's model's size)"
            )
    if sum(v.numel() for v in state.values()) > MAX_ELEMENTS:
        raise ModelFileError(f"{path}: more than {MAX_ELEMENTS} values: absurd size")
    return {k: v.clone() for k, v in state.items()} if is_zip else state
