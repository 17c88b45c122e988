"""`gradguard scan`: exit codes, --json, and a fuzz run of >= 1,000 hostile model files."""

import json
import os
import pickle
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradguard.cli import build_parser, main
from gradguard.cli import scan as scan_cli
from gradguard.errors import GradguardError
from gradguard.models import build_model
from gradguard.models.io import save_state

STATIC = ["--detectors", "architecture,forensics,transmit-snr", "--samples", "64"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    torch.manual_seed(0)
    m = build_model("mlp", (1, 8, 8), 10)
    save_state(m, d / "honest.safetensors")
    torch.save(m.state_dict(), d / "honest.pt")
    bad = m.state_dict()
    bad["head.weight"][1:] = 0
    save_state(bad, d / "fished.safetensors")
    return d, m


def test_exit_codes_and_json(files, capsys):
    d, _ = files
    assert main(["scan", str(d / "honest.safetensors"), "--model", "mlp", *STATIC]) == 0
    assert main(["scan", str(d / "honest.pt"), "--model", "mlp", *STATIC]) == 0
    capsys.readouterr()
    assert main(["scan", str(d / "fished.safetensors"), "--model", "mlp", "--json", *STATIC]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["malicious"] and any(f["check"] == "forensics.zero-rows" for f in out["findings"])
    assert main(["scan", str(d / "missing.safetensors"), "--model", "mlp"]) == 2
    assert (
        main(["scan", str(d / "honest.safetensors"), "--model", "mlp", "--detectors", "nope"]) == 2
    )
    with pytest.raises(SystemExit) as e:
        main(["scan", str(d / "honest.safetensors")])  # --model missing: argparse usage
    assert e.value.code == 2


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(d: Path, honest: bytes, state: dict, marker: Path, rng: random.Random):
    """Yield (path) of corrupted or hostile model files, many kinds."""
    n = 0

    def put(data: bytes, suffix=".safetensors"):
        nonlocal n
        n += 1
        p = d / f"f{n}{suffix}"
        p.write_bytes(data)
        return p

    hlen = struct.unpack("<Q", honest[:8])[0]
    header = json.loads(honest[8 : 8 + hlen])
    for _ in range(250):  # truncated
        yield put(honest[: rng.randrange(len(honest))])
    for _ in range(300):  # bit flips, anywhere (header included)
        b = bytearray(honest)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        yield put(bytes(b))
    for _ in range(200):  # hostile headers: dtypes, huge shapes, offsets
        h = json.loads(json.dumps(header))
        name = rng.choice([k for k in h if k != "__metadata__"])
        kind = rng.randrange(5)
        if kind == 0:
            h[name]["dtype"] = rng.choice(["C64", "F8_E4M3", "OBJ", "U64", "", 5])
        elif kind == 1:
            h[name]["shape"] = [rng.choice([2**40, 2**31, 10**12, -1, 3.5]), 1024]
        elif kind == 2:
            h[name]["data_offsets"] = [0, rng.choice([2**62, -5, 10**9])]
        elif kind == 3:
            h[name] = rng.choice([None, [], "x", 1])
        else:
            h["__metadata__"] = {"a": "b" * rng.randrange(100)}
            h[name]["shape"] = h[name]["shape"][::-1] + [1]
        hb = json.dumps(h).encode()
        yield put(struct.pack("<Q", len(hb)) + hb + honest[8 + hlen :])
    for _ in range(50):  # header length lies
        yield put(struct.pack("<Q", rng.choice([2**63, 10**12, len(honest), 0, 7])) + honest[8:])
    for i in range(100):  # NaN / Inf / wrong dtypes / wrong shapes, well-formed files
        s = {k: v.clone() for k, v in state.items()}
        k = rng.choice(list(s))
        kind = i % 4
        if kind == 0:
            s[k].view(-1)[rng.randrange(s[k].numel())] = rng.choice([float("nan"), float("inf")])
        elif kind == 1:
            s[k] = s[k].to(rng.choice([torch.float16, torch.float64, torch.int32, torch.uint8]))
        elif kind == 2:
            s[k] = torch.zeros(s[k].numel() + 1)
        else:
            s[k + ".extra"] = torch.ones(3)
        p = d / f"ok{i}.safetensors"
        save_state(s, p)
        yield p
    for i in range(60):  # pickles with code, plain and inside a torch archive
        evil = {"fc1.weight": _Evil(marker)}
        p = d / f"evil{i}.pt"
        if i % 2:
            torch.save(evil, p)
        else:
            p.write_bytes(pickle.dumps(evil, protocol=rng.choice([2, 4, 5])))
        yield p
    for _ in range(40):  # random bytes, empty, zip junk
        yield put(
            rng.choice(
                [
                    b"",
                    b"PK\x03\x04" + os.urandom(rng.randrange(200)),
                    os.urandom(rng.randrange(1, 3000)),
                ]
            ),
            rng.choice([".pt", ".bin"]),
        )


def _scan(parser, argv: list[str]) -> int:
    """``gradguard scan`` as :func:`gradguard.cli.main` runs it, with the parser built once."""
    args = parser.parse_args(argv)
    try:
        return int(scan_cli.run(args) or 0)
    except GradguardError as e:
        return getattr(e, "exit_code", 2)


def test_fuzz_hostile_model_files(files, tmp_path, capsys):
    d, m = files
    honest = (d / "honest.safetensors").read_bytes()
    marker = tmp_path / "PWNED"
    rng = random.Random(0)
    paths = list(_hostile(tmp_path, honest, m.state_dict(), marker, rng))
    assert len(paths) >= 1000
    codes = {}
    parser = build_parser()
    for i, p in enumerate(paths):
        argv = ["scan", str(p), "--model", "mlp", "--json", *STATIC]
        code = main(argv) if i % 10 == 0 else _scan(parser, argv)
        out = capsys.readouterr()
        assert code in (0, 1), (p, out.err)
        verdict = json.loads(out.out)  # a clean verdict every time
        assert code == 0 or verdict["malicious"]
        codes[code] = codes.get(code, 0) + 1
    assert not marker.exists()
    # bit flips inside the weights can leave a valid, finite model: a clean benign verdict
    assert codes.get(1, 0) > 600
    # a few through a real process
    for p in paths[::500][:1] + [p for p in paths if p.name.startswith("evil")][:2]:
        r = subprocess.run(
            [sys.executable, "-m", "gradguard", "scan", str(p), "--model", "mlp", *STATIC],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr
    assert not marker.exists()


def test_scan_default_detectors_are_the_guards():
    from gradguard.cli.scan import DEFAULT
    from gradguard.detect import GuardConfig

    assert tuple(DEFAULT.split(",")) == GuardConfig().detectors


def test_scan_names_the_exposure_of_disguised_trap_rows_in_one_line(tmp_path, capsys):
    """The white-box trap layer (128 traps among 872 honest rows, signature disguises): scan
    flags it, its first line saying what this round would expose and which units do it."""
    from gradguard.attacks.server.curious import Curious
    from gradguard.bench.attack_round import run_attack

    opts = {k: v for k, v in Curious.adaptive.items() if k not in ("conv_mix", "honest_channels")}
    r = run_attack("curious", dataset="digits", model="mlp", batch_size=64, **opts)
    save_state(r.manipulated, tmp_path / "traps.safetensors")
    code = main(["scan", str(tmp_path / "traps.safetensors"), "--model", "mlp", "--width", "1000"])
    line = capsys.readouterr().out.splitlines()[0]  # then one line per flagged finding
    assert code == 1 and line.startswith("FLAGGED this round would expose ")
    assert "[tampered]" in line and "exposure.lone" in line and "(trap weights)" in line
