"""Fuzz the security boundary with hostile inputs: model files, Flower messages, configurations.

    python benchmarks/fuzz.py [--quick] [--seed 0]

Every input comes from a hostile server or a careless operator; each is fed to the code that
must refuse it with one clear error or an abstention, never a traceback:

- model files (crafted safetensors and PyTorch archives: wrong dtypes, huge or negative
  shapes, overlapping offsets, zero-stride and overlapping views, storage sizes that lie,
  zip bombs, legacy pickles, truncation, bit flips, pickles that try to run code) through
  ``load_state(path, template=...)`` and, when it loads, ``Guard.check``;
- Flower messages of every type (train, evaluate, query and custom ``train.x`` ...) with
  hostile ArrayRecords (NaN, Inf, wrong shapes or dtypes, missing or extra keys, npy bytes
  that lie, pickled object arrays, attack models), run configs that try to disarm the
  guard, and messages carrying an Error, through ``guard_mod(template, data)`` with a fake
  ``call_next`` that records whether the handler ran;
- configurations: GuardConfig and thresholds, ClientDP and FederationConfig, the robust
  aggregators on updates holding NaN/Inf, and the secure sum over magnitudes 1e-12..1e15.

Counted: tracebacks (any exception other than the documented GradguardError), code executed
(a pickle payload creates a sentinel file), handler runs on a flagged or unverifiable model
(hostile messages carrying arrays), silent acceptances (a disarming configuration accepted, a
non-finite or wrong aggregate), and the RSS high-water mark of each input (VmHWM reset by
writing 5 to /proc/self/clear_refs before it). Seeded. Writes benchmarks/results/fuzz.{json,md}
(``fuzz_quick.*`` with --quick).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import math
import os
import pickle
import random
import shutil
import struct
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradguard.errors import GradguardError, ModelFileError

OUT = Path(__file__).parent / "results"
KiB = 1024


# ---------------------------------------------------------------- measurement


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Outcome:
    category: str
    kind: str
    name: str
    result: str = ""  # "refused: ..." / "abstained: ..." / "accepted" / "traceback: ..."
    traceback: bool = False
    code_executed: bool = False
    handler_ran: bool | None = None
    expect_handler: bool | None = None
    silent: bool = False  # a configuration or aggregate that should have been refused
    input_bytes: int = 0
    peak_extra_kib: int = 0
    seconds: float = 0.0


@dataclass
class Case:
    kind: str
    name: str
    run: Callable[[], tuple[str, dict]]  # -> (result text, extra fields for the Outcome)
    input_bytes: int = 0


@dataclass
class Setup:
    root: Path
    sentinel: Path
    template: torch.nn.Module
    data: object
    benign: dict[str, torch.Tensor]
    attacked: dict[str, dict[str, torch.Tensor]]
    template_bytes: int
    quick: bool
    rng: random.Random
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- crafting PyTorch files


class _Storage:
    """A storage reference as torch.save pickles it (persistent id)."""

    def __init__(self, key: str, numel: int, stype: str = "FloatStorage") -> None:
        self.key, self.numel, self.stype = key, numel, stype


class _Tensor:
    def __init__(self, storage, offset, size, stride) -> None:
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Call:
    """A pickle that calls ``fn(*args)`` when loaded: a code-execution attempt."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, obj.stype), obj.key, "cpu", obj.numel)
        return None


def pt_archive(
    obj,
    records: dict[str, bytes],
    compress: int = zipfile.ZIP_STORED,
    protocol: int = 2,
    prefix: str = "archive",
) -> bytes:
    """A zip laid out like torch.save's, holding pickle ``obj`` and storage ``records``."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as z:
        z.writestr(f"{prefix}/data.pkl", buf.getvalue())
        z.writestr(f"{prefix}/byteorder", "little")
        for k, b in records.items():
            z.writestr(f"{prefix}/data/{k}", b)
        z.writestr(f"{prefix}/version", "3\n")
    return out.getvalue()


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _payloads(sentinel: Path) -> list[tuple[str, object]]:
    """Callables a hostile pickle names to run code (each would create ``sentinel``)."""
    import builtins
    import subprocess

    s = str(sentinel)
    return [
        ("os.system", _Call(os.system, (f"touch {s}",))),
        ("posix.system", _Call(__import__("posix").system, (f"touch {s}",))),
        ("builtins.exec", _Call(builtins.exec, (f"open({s!r}, 'w').close()",))),
        ("builtins.eval", _Call(builtins.eval, (f"open({s!r}, 'w').close()",))),
        ("subprocess.call", _Call(subprocess.call, (["touch", s],))),
        ("builtins.open", _Call(builtins.open, (s, "w"))),
        ("pathlib.Path.touch", _Call(Path.touch, (sentinel,))),
        ("shutil.copy", _Call(shutil.copy, ("/etc/hostname", s))),
    ]


def _wrap_payload(kind: int, payload, benign: dict) -> object:
    """The payload at the top level, inside the state dict, or as a dict key."""
    if kind == 0:
        return payload
    if kind == 1:
        return {
            **{k: _Tensor(_Storage(k, 1), 0, (1,), (1,)) for k in list(benign)[:1]},
            "evil": payload,
        }
    return {"w": [payload, payload]}


# ---------------------------------------------------------------- model-file cases


def _safetensors_bytes(header: dict | bytes, data: bytes, declared: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if declared is None else declared
    return struct.pack("<Q", n) + raw + data


def _st_header(state: dict[str, torch.Tensor]) -> tuple[dict, bytes]:
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in state.items()})
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def model_file_cases(s: Setup) -> Iterator[Case]:
    rng = s.rng
    from safetensors.torch import save as st_save

    valid_st = st_save({k: v.contiguous() for k, v in s.benign.items()})
    valid_pt = _saved(s.benign)
    header, data = _st_header(s.benign)
    keys = list(header)
    dtypes_bad = ["F8_E4M3", "C64", "O", "U64", "object", "", None, 7, ["F32"], "f32"]
    shapes_bad = [[-1], [2**40], [2**62, 2**62], [1.5], [True], ["3"], [1] * 9, None, {}, [2**31]]

    def st_case(name: str, blob: bytes) -> Case:
        path = s.root / f"{len(os.listdir(s.root))}.safetensors"
        path.write_bytes(blob)
        return Case("safetensors", name, lambda p=path: _load_and_check(s, p), len(blob))

    def pt_case(name: str, blob: bytes, suffix: str = ".pt") -> Case:
        path = s.root / f"{len(os.listdir(s.root))}{suffix}"
        path.write_bytes(blob)
        return Case("pytorch", name, lambda p=path: _load_and_check(s, p), len(blob))

    reps = 1 if s.quick else 8
    # controls and values the detectors must judge (file loads; the Guard decides)
    for _ in range(reps):
        yield st_case("control: honest model (safetensors)", valid_st)
        yield pt_case("control: honest model (torch.save)", valid_pt)
        for attack, st in s.attacked.items():
            yield st_case(f"{attack} model", st_save({k: v.contiguous() for k, v in st.items()}))
            yield pt_case(f"{attack} model (.pt)", _saved(st))
        bad = {k: v.clone() for k, v in s.benign.items()}
        k = rng.choice([k for k in bad if bad[k].is_floating_point()])
        bad[k].view(-1)[rng.randrange(bad[k].numel())] = rng.choice([math.nan, math.inf, -math.inf])
        yield st_case("non-finite value", st_save(bad))
        yield pt_case("non-finite value (.pt)", _saved(bad))
        big = {k: v * 10.0 ** rng.uniform(6, 37) for k, v in s.benign.items()}
        yield st_case("absurd magnitudes", st_save({k: v.contiguous() for k, v in big.items()}))
        shaped = {
            k: torch.zeros(*(d + rng.randint(1, 3) for d in v.shape)) for k, v in s.benign.items()
        }
        yield st_case("wrong shapes", st_save(shaped))
        yield pt_case("wrong shapes (.pt)", _saved(shaped))
        missing = dict(list(s.benign.items())[:-1])
        yield st_case("missing entry", st_save({k: v.contiguous() for k, v in missing.items()}))
        typed = {
            k: v.to(rng.choice([torch.float64, torch.int32, torch.bool, torch.float16]))
            for k, v in s.benign.items()
        }
        yield st_case("wrong dtypes", st_save({k: v.contiguous() for k, v in typed.items()}))
        yield pt_case(
            "complex storage", _saved({k: v.to(torch.complex64) for k, v in s.benign.items()})
        )
    extra = {**s.benign, "padding": torch.zeros((8 if s.quick else 32) * 1024**2 // 4)}
    yield st_case(
        "extra 8-32 MB tensor (over the template's size)",
        st_save({k: v.contiguous() for k, v in extra.items()}),
    )
    yield pt_case("extra 8-32 MB tensor (.pt)", _saved(extra))

    n = 4 if s.quick else 25
    # safetensors headers
    for i in range(n):
        h = json.loads(json.dumps(header))
        h[rng.choice(keys)]["dtype"] = dtypes_bad[i % len(dtypes_bad)]
        yield st_case("safetensors: unsupported dtype", _safetensors_bytes(h, data))
        h = json.loads(json.dumps(header))
        h[rng.choice(keys)]["shape"] = shapes_bad[i % len(shapes_bad)]
        yield st_case("safetensors: invalid shape", _safetensors_bytes(h, data))
        h = json.loads(json.dumps(header))
        k = rng.choice(keys)
        lo, hi = h[k]["data_offsets"]
        h[k]["data_offsets"] = rng.choice(
            [
                [0, hi - lo],
                [lo, hi + 4],
                [-4, hi],
                [hi, lo],
                [lo, 2**63],
                [lo],
                "x",
                [lo, hi, 0],
                [lo + 0.5, hi],
            ]
        )
        yield st_case("safetensors: bad offsets", _safetensors_bytes(h, data))
        h = json.loads(json.dumps(header))
        for key in keys:  # every tensor reads the same bytes: 1 file, n copies
            h[key]["data_offsets"] = [0, h[key]["data_offsets"][1] - h[key]["data_offsets"][0]]
        yield st_case("safetensors: overlapping offsets", _safetensors_bytes(h, data))
        h = json.loads(json.dumps(header))
        for key in keys:
            h[key]["shape"] = [2**20, 2**11]
        yield st_case("safetensors: 2^31 elements declared", _safetensors_bytes(h, data))
        yield st_case(
            "safetensors: header length lies",
            _safetensors_bytes(header, data, rng.choice([0, 2**64 - 1, 2**40, len(data) * 3, 7])),
        )
        raw = json.dumps(header).encode()
        yield st_case(
            "safetensors: header not a mapping",
            _safetensors_bytes(rng.choice([b"[]", b"42", b"null", b'"x"', b"[" * 5000]), data),
        )
        yield st_case(
            "safetensors: header not JSON", _safetensors_bytes(raw[: rng.randrange(len(raw))], data)
        )
        yield st_case(
            "safetensors: header not UTF-8",
            _safetensors_bytes(bytes(rng.randrange(128, 256) for _ in range(64)), data),
        )
        dup = raw[:-1] + b"," + json.dumps({keys[0]: header[keys[0]]}).encode()[1:]
        yield st_case("safetensors: duplicate keys", _safetensors_bytes(dup, data))
        deep = b'{"a":' * 2000 + b"1" + b"}" * 2000
        yield st_case("safetensors: deeply nested header", _safetensors_bytes(deep, b""))
        cut = rng.randrange(len(valid_st))
        yield st_case("safetensors: truncated", valid_st[:cut])
        flipped = bytearray(valid_st)
        for _ in range(rng.randint(1, 16)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        yield st_case("safetensors: bit flips", bytes(flipped))
        many = {
            f"t{j}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * j, 4 * j + 4]}
            for j in range(20_000 if not s.quick else 2_000)
        }
        if i < 2:
            yield st_case(
                "safetensors: 20k tiny tensors", _safetensors_bytes(many, b"\0" * 4 * len(many))
            )
        yield st_case(
            "random bytes", bytes(rng.randrange(256) for _ in range(rng.randint(0, 4096)))
        )

    # PyTorch archives
    fl = torch.zeros(1)
    for i in range(n):
        yield pt_case(
            "pt: zero-stride 2^31-1 elements", _saved({"w": fl.as_strided((2**31 - 1,), (0,))})
        )
        m = rng.randint(100, 3000)
        yield pt_case(
            "pt: overlapping strides", _saved({"w": torch.zeros(2 * m).as_strided((m, m), (1, 1))})
        )
        st = _Storage("0", 4)
        yield pt_case(
            "pt: view beyond its storage",
            pt_archive(
                {"w": _Tensor(st, rng.choice([0, 3, 2**40]), (2**20,), (1,))}, {"0": b"\0" * 16}
            ),
        )
        yield pt_case(
            "pt: negative stride / offset",
            pt_archive(
                {"w": _Tensor(_Storage("0", 4), rng.choice([-1, 0]), (4,), (-1,))},
                {"0": b"\0" * 16},
            ),
        )
        yield pt_case(
            "pt: storage size lies",
            pt_archive(
                {"w": _Tensor(_Storage("0", rng.choice([10**9, 2**40, 2**62])), 0, (4,), (1,))},
                {"0": b"\0" * 16},
            ),
        )
        yield pt_case(
            "pt: one storage, 500 full views",
            pt_archive(
                {f"w{j}": _Tensor(_Storage("0", 2**18), 0, (2**18,), (1,)) for j in range(500)},
                {"0": b"\0" * 2**20},
            ),
        )
        yield pt_case(
            "pt: unsupported storage type",
            pt_archive(
                {
                    "w": _Tensor(
                        _Storage(
                            "0",
                            4,
                            rng.choice(["QInt8Storage", "ComplexFloatStorage", "UntypedStorage"]),
                        ),
                        0,
                        (4,),
                        (1,),
                    )
                },
                {"0": b"\0" * 32},
            ),
        )
        yield pt_case(
            "pt: not a mapping of tensors",
            pt_archive(rng.choice([[1, 2], {"a": 1}, {1: "x"}, "s", None, {"a": {"b": 1}}]), {}),
        )
        yield pt_case(
            "pt: compressed entries",
            pt_archive(
                {"w": _Tensor(_Storage("0", 1024), 0, (1024,), (1,))},
                {"0": b"\0" * 4096},
                compress=zipfile.ZIP_DEFLATED,
            ),
        )
        yield pt_case("pt: central directory lies", _lying_zip(valid_pt, rng))
        cut = rng.randrange(len(valid_pt))
        yield pt_case("pt: truncated archive", valid_pt[:cut])
        flipped = bytearray(valid_pt)
        for _ in range(rng.randint(1, 16)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        yield pt_case("pt: bit flips", bytes(flipped))
        yield pt_case("pt: missing data.pkl", _drop_entry(valid_pt, "data.pkl"))
        yield pt_case("pt: legacy (non-zip) format", _legacy(s.benign))
        yield pt_case(
            "pt: deeply nested pickle",
            b"PK\x03\x04" + b"(" * 50000
            if i % 2
            else _nested_pickle_archive(rng.randint(1000, 200_000)),
        )
        for pname, payload in _payloads(s.sentinel):
            yield pt_case(
                f"pt: pickle calls {pname}",
                pt_archive(
                    _wrap_payload(i % 3, payload, s.benign),
                    {"w": b"\0" * 4},
                    protocol=rng.choice([2, 4, 5]),
                ),
            )
            if i % 5 == 0:
                buf = io.BytesIO()
                pickle.Pickler(buf, protocol=2).dump(_wrap_payload(i % 3, payload, s.benign))
                yield pt_case(f"raw pickle calls {pname}", buf.getvalue(), ".pkl")
    bombs = 1 if s.quick else 3
    for j in range(bombs):
        yield pt_case(
            f"pt: zip bomb ({(j + 1) * 64} MiB of zeros, deflated)", _zip_bomb((j + 1) * 64)
        )


def _nested_pickle_archive(depth: int) -> bytes:
    """An archive whose data.pkl nests ``depth`` lists (MARK ... LIST opcodes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"(" * depth + b"l" * depth + b".")
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def _legacy(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _drop_entry(blob: bytes, suffix: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith(suffix):
                dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def _lying_zip(blob: bytes, rng: random.Random) -> bytes:
    """Central-directory sizes rewritten to claim huge uncompressed entries."""
    b = bytearray(blob)
    pos = b.find(b"PK\x01\x02")
    while pos != -1:
        size = rng.choice([2**31, 2**32 - 1, 10**9])
        b[pos + 24 : pos + 28] = struct.pack("<I", size)
        if rng.random() < 0.5:
            b[pos + 10 : pos + 12] = struct.pack("<H", 8)  # claim deflate
        pos = b.find(b"PK\x01\x02", pos + 4)
    return bytes(b)


def _zip_bomb(mib: int) -> bytes:
    out = io.BytesIO()
    chunk = b"\0" * 1024**2
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(
            {"w": _Tensor(_Storage("0", mib * 1024**2 // 4), 0, (mib * 1024**2 // 4,), (1,))}
        )
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            for _ in range(mib):
                f.write(chunk)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def _load_and_check(s: Setup, path: Path) -> tuple[str, dict]:
    from gradguard.models.io import load_state

    try:
        state = load_state(path, template=s.template)
    except ModelFileError as e:
        return f"refused: {str(e).split(': ', 1)[-1][:90]}", {}
    verdict = s.extra["guard"].check(state)
    if not verdict.verified:
        return "cannot verify: " + verdict.summary()[:80], {}
    return ("flagged: " if verdict.malicious else "benign: ") + verdict.summary()[:80], {}


# ---------------------------------------------------------------- Flower messages


MESSAGE_TYPES = ["train", "evaluate", "query", "train.custom", "evaluate.holdout", "query.stats"]


def flower_cases(s: Setup) -> Iterator[Case]:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Error, RecordDict

    rng = s.rng
    bstate = {k: v.numpy() for k, v in s.benign.items()}

    def arrays(state: dict[str, np.ndarray]) -> ArrayRecord:
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})

    def raw_array(dtype: str, shape, data: bytes, stype: str = "numpy.ndarray") -> Array:
        return Array(dtype=dtype, shape=tuple(shape), stype=stype, data=data)

    def npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=allow_pickle)
        return buf.getvalue()

    def npy_header_lie(shape, dtype="<f4") -> bytes:
        header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
        header = header.ljust(118) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64

    def hostile_records() -> Iterator[tuple[str, Callable[[], RecordDict]]]:
        def with_arrays(rec):
            return lambda: RecordDict({"arrays": rec(), "config": ConfigRecord({"lr": 0.1})})

        def nonfinite():
            st = {k: v.copy() for k, v in bstate.items()}
            k = rng.choice(list(st))
            st[k].reshape(-1)[rng.randrange(st[k].size)] = rng.choice([np.nan, np.inf, -np.inf])
            return arrays(st)

        yield "non-finite value", with_arrays(nonfinite)
        for attack, st in s.attacked.items():
            yield (
                f"{attack} model",
                with_arrays(lambda st=st: arrays({k: v.numpy() for k, v in st.items()})),
            )
        yield (
            "wrong shapes",
            with_arrays(
                lambda: arrays(
                    {k: np.zeros([d + 1 for d in v.shape], np.float32) for k, v in bstate.items()}
                )
            ),
        )
        yield (
            "wrong dtype",
            with_arrays(
                lambda: arrays(
                    {
                        k: v.astype(
                            rng.choice([np.float64, np.int64, np.float16, np.bool_, np.complex64])
                        )
                        for k, v in bstate.items()
                    }
                )
            ),
        )
        yield "missing entry", with_arrays(lambda: arrays(dict(list(bstate.items())[1:])))
        yield (
            "extra entry",
            with_arrays(lambda: arrays({**bstate, "extra": np.zeros(8, np.float32)})),
        )
        yield (
            "absurd magnitudes",
            with_arrays(
                lambda: arrays(
                    {k: v * np.float32(10.0 ** rng.uniform(7, 37)) for k, v in bstate.items()}
                )
            ),
        )
        yield "empty ArrayRecord", with_arrays(lambda: ArrayRecord())
        yield (
            "npy header lies (2^40 elements)",
            with_arrays(
                lambda: ArrayRecord(
                    {k: raw_array("float32", (2**40,), npy_header_lie((2**40,))) for k in bstate}
                )
            ),
        )
        yield (
            "npy header lies (2^20 x 2^20)",
            with_arrays(
                lambda: ArrayRecord(
                    {
                        k: raw_array("float32", v.shape, npy_header_lie((2**20, 2**20)))
                        for k, v in bstate.items()
                    }
                )
            ),
        )
        yield (
            "truncated npy",
            with_arrays(
                lambda: ArrayRecord(
                    {
                        k: raw_array("float32", v.shape, npy(v)[: rng.randrange(1, len(npy(v)))])
                        for k, v in bstate.items()
                    }
                )
            ),
        )
        yield (
            "npy of another shape than declared",
            with_arrays(
                lambda: ArrayRecord(
                    {
                        k: raw_array("float32", v.shape, npy(np.zeros(3, np.float32)))
                        for k, v in bstate.items()
                    }
                )
            ),
        )
        yield (
            "pickled object array (code payload)",
            with_arrays(
                lambda: ArrayRecord(
                    {
                        k: raw_array(
                            "object",
                            (1,),
                            npy(np.array([_payloads(s.sentinel)[0][1]], dtype=object), True),
                        )
                        for k in bstate
                    }
                )
            ),
        )
        yield (
            "unknown serialization type",
            with_arrays(
                lambda: ArrayRecord(
                    {
                        k: raw_array("float32", v.shape, npy(v), stype="torch.pickle")
                        for k, v in bstate.items()
                    }
                )
            ),
        )
        yield (
            "random bytes as arrays",
            with_arrays(
                lambda: ArrayRecord(
                    {
                        k: raw_array(
                            "float32", v.shape, bytes(rng.randrange(256) for _ in range(64))
                        )
                        for k, v in bstate.items()
                    }
                )
            ),
        )
        yield (
            "two ArrayRecords (honest + imprint)",
            lambda: RecordDict(
                {
                    "arrays": arrays(bstate),
                    "arrays2": arrays(
                        {k: v.numpy() for k, v in next(iter(s.attacked.values())).items()}
                    ),
                }
            ),
        )

    for _ in range(1 if s.quick else 5):
        for mtype in MESSAGE_TYPES:
            for name, content in hostile_records():
                yield _message_case(s, mtype, name, content, expect_handler=False)
            # run configs that try to disarm the guard, on a model the default guard flags
            imprint = next(iter(s.attacked.values()))
            for rc in (
                {"guard-detectors": ","},
                {"guard-detectors": "architecture"},
                {"guard-policy": "warn"},
                {"guard-thresholds": "forensics.duplicate_rows=inf"},
                {"guard-thresholds": "forensics.duplicate_rows=nan,warmup+.z=1e300"},
                {"guard-thresholds": "nonsense"},
                {"guarded": False, "guard-detectors": "dsnr"},
            ):
                yield _message_case(
                    s,
                    mtype,
                    f"run config {rc}",
                    lambda st=imprint: RecordDict(
                        {"arrays": arrays({k: v.numpy() for k, v in st.items()})}
                    ),
                    expect_handler=False,
                    run_config=rc,
                )
            yield _message_case(
                s,
                mtype,
                "message carrying an Error",
                None,
                expect_handler=None,
                error=Error(code=0, reason="server error"),
            )
            yield _message_case(
                s,
                mtype,
                "no ArrayRecord (config only)",
                lambda: RecordDict({"config": ConfigRecord({"x": 1})}),
                expect_handler=None,
            )
            yield _message_case(
                s,
                mtype,
                "control: honest model",
                lambda: RecordDict({"arrays": arrays(bstate)}),
                expect_handler=True,
            )


def _message_case(s, mtype, name, content, expect_handler, run_config=None, error=None) -> Case:
    def run() -> tuple[str, dict]:
        from flwr.app import Context, Message, Metadata, MetricRecord, RecordDict

        md = Metadata(
            run_id=1,
            message_id=f"m{s.rng.randrange(10**9)}",
            src_node_id=0,
            dst_node_id=7,
            reply_to_message_id="",
            group_id="1",
            created_at=time.time(),
            ttl=3600.0,
            message_type=mtype,
        )
        msg = (
            Message(error=error, metadata=md)
            if error is not None
            else Message(content(), metadata=md)
        )
        ctx = Context(
            run_id=1,
            node_id=7,
            node_config={},
            state=RecordDict(),
            run_config=dict(run_config or {}),
        )
        ran = []

        def call_next(m, c):
            ran.append(True)
            return Message(RecordDict({"metrics": MetricRecord({"loss": 1.0})}), reply_to=m)

        size = 0
        if msg.has_content():
            size = sum(
                len(a.data) for rec in msg.content.array_records.values() for a in rec.values()
            )
        reply = s.extra["mod"](msg, ctx, call_next)
        text = "handler ran" if ran else "handler not run"
        if reply.has_error():
            text += f"; abstained: {reply.error.reason[:80]}"
        return text, {
            "handler_ran": bool(ran),
            "expect_handler": expect_handler,
            "input_bytes": size,
        }

    return Case(f"message:{mtype}", name, run)


# ---------------------------------------------------------------- configurations


def config_cases(s: Setup) -> Iterator[Case]:
    from gradguard.detect import DETECTORS, Guard, GuardConfig
    from gradguard.detect.thresholds import DEFAULTS, MAX_RATIO

    rng = s.rng
    weird = [math.nan, math.inf, -math.inf, 1e300, -1.0, 0.0, 1e-300, "3", None, True, [1], 2**70]

    def value_for(key: str):
        return rng.choice(
            weird + [DEFAULTS.get(key, 1.0) * rng.choice([0.5, 1, 2, 999, 1001, 1e6])]
        )

    def guard_config() -> Case:
        policy = rng.choice(["abstain", "warn", "", "ABSTAIN", "off", None, 3])
        pool = list(DETECTORS) + ["", "nope", "warmup++", None, 5]
        dets = rng.choice(
            [tuple(rng.sample(pool, rng.randint(0, 4))), (), "architecture", tuple(DETECTORS), None]
        )
        keys = list(DEFAULTS) + ["warmup+.zz", "forensics", "", "x.y", 5]
        th = {
            rng.choice(keys): value_for(rng.choice(list(DEFAULTS)))
            for _ in range(rng.randint(0, 3))
        }
        opts = rng.choice([{}, {"nope": {}}, {"warmup+": "x"}, {"architecture": {}}])

        def run() -> tuple[str, dict]:
            try:
                g = Guard(
                    GuardConfig(policy=policy, detectors=dets, thresholds=th, options=opts),
                    template=s.template,
                    data=rng.choice([s.data, None]),
                )
            except GradguardError as e:
                return f"refused: {str(e)[:90]}", {}
            disarmed = (
                not g.detectors
                or any(
                    not (isinstance(v, (int, float)) and 0 < float(v) <= MAX_RATIO * DEFAULTS[k])
                    for k, v in th.items()
                )
                or any(k not in DEFAULTS for k in th)
            )
            verdict = g.check(s.attacked_state())
            # with default thresholds and policy, a Guard running forensics must refuse imprint
            missed = (
                not th
                and g.config.policy == "abstain"
                and "forensics" in g.config.detectors
                and g.allows(verdict)
            )
            return "accepted", {"silent": disarmed or missed}

        return Case("GuardConfig", f"policy={policy!r} detectors={dets!r} thresholds={th!r}", run)

    def dp_config() -> Case:
        clip, noise = value_for("x"), value_for("x")

        def run() -> tuple[str, dict]:
            from gradguard.fl.dp import ClientDP

            try:
                ClientDP(clip, noise)
            except GradguardError as e:
                return f"refused: {str(e)[:90]}", {}
            ok = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (clip, noise))
            return "accepted", {"silent": not (ok and clip > 0 and noise >= 0)}

        return Case("ClientDP", f"clip={clip!r} noise={noise!r}", run)

    def fed_config() -> Case:
        kw = rng.choice(
            [
                {"rounds": rng.choice([0, -1, 3])},
                {"server_lr": rng.choice([math.nan, math.inf, -1.0, 0.5])},
                {
                    "aggregator": rng.choice(["mean", "avg", "", "krum"]),
                    "secure_aggregation": rng.random() < 0.5,
                },
                {"byzantine": rng.choice([-1, 0, 2])},
                {"clients_per_round": rng.choice([0, -3, 2])},
                {"dp": rng.choice(["x", None, 1.0])},
            ]
        )

        def run() -> tuple[str, dict]:
            from gradguard.fl.simulation import FederationConfig

            try:
                FederationConfig(**kw)
            except GradguardError as e:
                return f"refused: {str(e)[:90]}", {}
            lr = kw.get("server_lr", 1.0)
            bad = (
                not math.isfinite(lr)
                or lr <= 0
                or kw.get("rounds", 1) < 1
                or kw.get("byzantine", 0) < 0
                or (kw.get("clients_per_round") or 1) < 1
                or kw.get("dp") not in (None,)
            )
            return "accepted", {"silent": bad}

        return Case("FederationConfig", repr(kw), run)

    def aggregator_case() -> Case:
        from gradguard.fl.aggregate import AGGREGATORS

        name = rng.choice(list(AGGREGATORS))
        n, d = rng.randint(1, 12), rng.randint(1, 300)
        v = torch.randn(n, d) * 10.0 ** rng.uniform(-6, 6)
        for _ in range(rng.randint(0, n)):
            v[rng.randrange(n), rng.randrange(d)] = rng.choice([math.nan, math.inf, -math.inf])
        if rng.random() < 0.1:
            v[rng.randrange(n)] *= 1e38
        w = torch.rand(n) * 100
        f = rng.randint(0, max(0, n // 2))

        def run() -> tuple[str, dict]:
            from gradguard.fl.aggregate import aggregate

            try:
                out = aggregate(name, v, w, f)
            except GradguardError as e:
                return f"refused: {str(e)[:90]}", {}
            finite = torch.isfinite(v).all(1)
            good = v[finite]
            wrong = not bool(torch.isfinite(out).all()) or (
                len(good) > 0
                and name != "mean"
                and not bool(
                    (
                        (out >= good.min(0).values - 1e-3 * good.abs().max(0).values - 1e-6)
                        & (out <= good.max(0).values + 1e-3 * good.abs().max(0).values + 1e-6)
                    ).all()
                )
            )
            return "aggregated", {"silent": wrong}

        return Case(f"aggregate:{name}", f"n={n} d={d} f={f}", run)

    def secure_case() -> Case:
        n = rng.randint(1, 10)
        scale = 10.0 ** rng.uniform(-12, 15)
        vecs = [torch.randn(64, dtype=torch.float64) * scale for _ in range(n)]
        if rng.random() < 0.1:
            vecs[0][0] = rng.choice([math.nan, math.inf])
        bits = rng.choice([None, None, 20, 40])

        def run() -> tuple[str, dict]:
            from gradguard.fl.secure import PRECISION, secure_sum

            try:
                got = secure_sum(vecs, list(range(n)), seed=rng.randrange(1000), bits=bits)
            except GradguardError as e:
                return f"refused: {str(e)[:90]}", {}
            want = torch.stack(vecs).sum(0)
            # the documented bound: each vector's encoding error is <= PRECISION x its norm
            bound = PRECISION * sum(float(v.norm()) for v in vecs) + 1e-12 * float(want.norm())
            err = float((got - want).norm())
            return f"sum, error {err:.2g} (bound {bound:.2g})", {"silent": not err <= bound}

        return Case("secure_sum", f"n={n} scale={scale:.2g} bits={bits}", run)

    def threshold_case() -> Case:
        key = rng.choice(list(DEFAULTS) + ["nope.z", ""])
        val = value_for(key if key in DEFAULTS else "x")

        def run() -> tuple[str, dict]:
            from gradguard.detect.thresholds import resolve

            det = key.split(".")[0] if key else "warmup+"
            try:
                t = resolve(det, {key: val})
            except GradguardError as e:
                return f"refused: {str(e)[:90]}", {}
            bad = any(
                not (math.isfinite(x) and 0 < x <= MAX_RATIO * DEFAULTS[det + "." + k])
                for k, x in t.items()
            )
            return "accepted", {"silent": bad}

        return Case("thresholds", f"{key}={val!r}", run)

    makers = [
        (guard_config, 0.3),
        (dp_config, 0.12),
        (fed_config, 0.12),
        (aggregator_case, 0.2),
        (secure_case, 0.14),
        (threshold_case, 0.12),
    ]
    total = 80 if s.quick else 800
    for maker, share in makers:
        for _ in range(max(5, int(share * total))):
            yield maker()


# ---------------------------------------------------------------- driver


def run_case(category: str, case: Case, s: Setup) -> Outcome:
    out = Outcome(category, case.kind, case.name, input_bytes=case.input_bytes)
    base = _status_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    try:
        out.result, extra = case.run()
        for k, v in extra.items():
            setattr(out, k, v)
    except GradguardError as e:  # the documented one-line error
        out.result = f"refused: {str(e)[:90]}"
    except BaseException as e:  # noqa: BLE001 - the count we exist for
        if isinstance(e, KeyboardInterrupt):
            raise
        out.traceback = True
        out.result = f"traceback: {type(e).__name__}: {str(e)[:120]}"
        s.extra.setdefault("tracebacks", []).append(traceback.format_exc(limit=6))
    out.seconds = time.perf_counter() - t0
    out.peak_extra_kib = max(0, _status_kib("VmHWM") - base)
    if s.sentinel.exists():
        out.code_executed = True
        s.sentinel.unlink()
    return out


def prepare(quick: bool, seed: int, root: Path) -> Setup:
    from gradguard.attacks import get_attack
    from gradguard.data import train_test
    from gradguard.detect import Guard
    from gradguard.integrations.flower.mod import guard_mod
    from gradguard.models import build_model
    from gradguard.models.io import state_bytes

    torch.manual_seed(seed)
    train, test = train_test("digits", limit=300)
    template = build_model("mlp", train.image_shape, train.num_classes)
    benign = {k: v.clone() for k, v in template.state_dict().items()}
    guard = Guard(template=template, data=train)
    attacked = {}
    for name, options in (("imprint", {}), ("curious", {"neurons": 256})):
        model = build_model("mlp", train.image_shape, train.num_classes)
        model, _ = get_attack(name, **options).manipulate(model, test)
        st = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if st.keys() == benign.keys() and guard.check(st).malicious:
            attacked[name] = st
    assert attacked, "no attack model the default guard flags"
    assert not guard.check(benign).malicious, "the honest control must pass"
    sentinel = root / "CODE_EXECUTED"
    files = root / "files"
    files.mkdir()
    s = Setup(
        files,
        sentinel,
        template,
        train,
        benign,
        attacked,
        state_bytes(template),
        quick,
        random.Random(seed),
    )
    s.extra["guard"] = guard
    s.extra["mod"] = guard_mod(template, train)
    s.attacked_state = lambda: next(iter(attacked.values()))  # type: ignore[attr-defined]
    return s


def summarize(outcomes: list[Outcome], s: Setup, seconds: float) -> dict:
    by_cat: dict[str, dict] = {}
    for o in outcomes:
        c = by_cat.setdefault(
            o.category,
            {
                "inputs": 0,
                "tracebacks": 0,
                "code_executed": 0,
                "handler_runs_on_hostile": 0,
                "silent_acceptances": 0,
                "peak_extra_kib_max": 0,
                "kinds": {},
            },
        )
        c["inputs"] += 1
        c["tracebacks"] += o.traceback
        c["code_executed"] += o.code_executed
        c["handler_runs_on_hostile"] += bool(o.handler_ran and o.expect_handler is False)
        c["silent_acceptances"] += o.silent
        c["peak_extra_kib_max"] = max(c["peak_extra_kib_max"], o.peak_extra_kib)
        k = c["kinds"].setdefault(
            o.kind, {"inputs": 0, "tracebacks": 0, "handler_runs_on_hostile": 0}
        )
        k["inputs"] += 1
        k["tracebacks"] += o.traceback
        k["handler_runs_on_hostile"] += bool(o.handler_ran and o.expect_handler is False)
    controls = [o for o in outcomes if o.expect_handler is True]
    worst = max(outcomes, key=lambda o: o.peak_extra_kib)
    files = [o for o in outcomes if o.category == "model files" and o.input_bytes]
    ratio = max(files, key=lambda o: o.peak_extra_kib * 1024 / max(o.input_bytes, s.template_bytes))
    peaks = sorted(o.peak_extra_kib for o in outcomes)
    failures = [
        asdict_outcome(o)
        for o in outcomes
        if o.traceback
        or o.code_executed
        or o.silent
        or (o.handler_ran and o.expect_handler is False)
    ]
    return {
        "seed": s.rng_seed,
        "quick": s.quick,
        "torch": torch.__version__,
        "template_bytes": s.template_bytes,
        "inputs": len(outcomes),
        "tracebacks": sum(o.traceback for o in outcomes),
        "code_executed": sum(o.code_executed for o in outcomes),
        "handler_runs_on_hostile": sum(
            bool(o.handler_ran and o.expect_handler is False) for o in outcomes
        ),
        "silent_acceptances": sum(o.silent for o in outcomes),
        "benign_controls": len(controls),
        "benign_controls_handled": sum(bool(o.handler_ran) for o in controls),
        "peak_extra_kib": {
            "median": peaks[len(peaks) // 2],
            "p99": peaks[int(0.99 * (len(peaks) - 1))],
            "max": worst.peak_extra_kib,
        },
        "largest": asdict_outcome(worst),
        "largest_relative_to_size": {
            **asdict_outcome(ratio),
            "ratio": round(
                ratio.peak_extra_kib * 1024 / max(ratio.input_bytes, s.template_bytes), 2
            ),
        },
        "peak_measured": s.extra.get("peak_ok", False),
        "categories": by_cat,
        "failures": failures[:200],
        "traceback_samples": s.extra.get("tracebacks", [])[:10],
        "seconds": round(seconds, 1),
    }


def asdict_outcome(o: Outcome) -> dict:
    return {
        k: getattr(o, k)
        for k in (
            "category",
            "kind",
            "name",
            "result",
            "input_bytes",
            "peak_extra_kib",
            "seconds",
            "handler_ran",
            "expect_handler",
        )
    }


def write_md(r: dict, path: Path) -> None:
    rel = r["largest_relative_to_size"]
    lines = [
        f"# Fuzzing the security boundary ({'quick' if r['quick'] else 'full'}, seed {r['seed']})",
        "",
        f"Command: `python benchmarks/fuzz.py{' --quick' if r['quick'] else ''} --seed {r['seed']}`"
        f" (torch {r['torch']}, {r['seconds']} s). Template: mlp on digits, "
        f"{r['template_bytes']} bytes.",
        "",
        f"- inputs: **{r['inputs']}**",
        f"- tracebacks: **{r['tracebacks']}**",
        f"- code executed (sentinel file created): **{r['code_executed']}**",
        f"- handler runs on a flagged or unverifiable model: **{r['handler_runs_on_hostile']}**",
        f"- silent acceptances (disarming config accepted, wrong aggregate or sum): "
        f"**{r['silent_acceptances']}**",
        f"- honest controls that reached the handler: {r['benign_controls_handled']} of "
        f"{r['benign_controls']}",
        f"- peak memory per input above the RSS before it (VmHWM): median "
        f"{r['peak_extra_kib']['median']} KiB, p99 {r['peak_extra_kib']['p99']} KiB, max "
        f"{r['peak_extra_kib']['max']} KiB: *{r['largest']['kind']} / {r['largest']['name']}* "
        f"({r['largest']['input_bytes']} bytes in)",
        f"- largest peak relative to max(file size, template size): "
        f"{r['largest_relative_to_size']['ratio']}x "
        f"(*{rel['name']}*, {rel['input_bytes']} bytes)",
        "",
        "| category | kind | inputs | tracebacks | handler runs on hostile |",
        "|---|---|---:|---:|---:|",
    ]
    for cat, c in r["categories"].items():
        for kind, k in sorted(c["kinds"].items()):
            lines.append(
                f"| {cat} | {kind} | {k['inputs']} | {k['tracebacks']} | "
                f"{k['handler_runs_on_hostile']} |"
            )
    lines += [
        "",
        "| category | inputs | tracebacks | code executed | handler runs on hostile "
        "| silent | max peak KiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cat, c in r["categories"].items():
        lines.append(
            f"| {cat} | {c['inputs']} | {c['tracebacks']} | {c['code_executed']} | "
            f"{c['handler_runs_on_hostile']} | {c['silent_acceptances']} | "
            f"{c['peak_extra_kib_max']} |"
        )
    if r["failures"]:
        lines += [
            "",
            "## Failures (first 40)",
            "",
            "| category | kind | input | result |",
            "|---|---|---|---|",
        ]
        for f in r["failures"][:40]:
            lines.append(
                f"| {f['category']} | {f['kind']} | {f['name'][:60]} | "
                f"{f['result'][:100].replace('|', '/')} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="about 300 inputs instead of 2,500+")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # abstentions and rejections are counted, not printed
    root = Path(tempfile.mkdtemp(prefix="gradguard-fuzz-"))
    try:
        s = prepare(args.quick, args.seed, root)
        s.rng_seed = args.seed  # type: ignore[attr-defined]
        s.extra["peak_ok"] = _reset_peak()
        groups = [
            ("model files", model_file_cases),
            ("flower messages", flower_cases),
            ("configurations", config_cases),
        ]
        outcomes: list[Outcome] = []
        start = time.perf_counter()
        cols = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tracebacks {task.fields[tb]}"),
            TimeElapsedColumn(),
        )
        with Progress(*cols) as bar:
            for category, gen in groups:
                cases = list(gen(s))
                seen: set[str] = set()
                for case in cases:  # one-time costs (imports, lazy init) are not an input's
                    if case.name not in seen:
                        seen.add(case.name)
                        run_case(category, case, s)
                s.extra["tracebacks"] = []
                task = bar.add_task(category, total=len(cases), tb=0)
                tb = 0
                for case in cases:
                    o = run_case(category, case, s)
                    tb += o.traceback
                    outcomes.append(o)
                    bar.update(task, advance=1, tb=tb)
        result = summarize(outcomes, s, time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    stem = "fuzz_quick" if args.quick else "fuzz"
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_md(result, OUT / f"{stem}.md")
    print((OUT / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
