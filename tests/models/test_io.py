"""Model-file reading under hostile input: byte limits before anything is materialised."""

import collections
import io
import json
import pickle
import resource
import struct
import zipfile

import pytest
import torch

from gradguard.errors import ModelFileError
from gradguard.models import build_model
from gradguard.models.io import load_state, require_safe_torch, save_state, view_problem


class _Storage:
    def __init__(self, numel, stype="FloatStorage"):
        self.numel, self.stype = numel, stype


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, obj.stype), "0", "cpu", obj.numel)
        return None


def _archive(obj, record: bytes, compress=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", record)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10)


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_zero_stride_pt_is_refused_before_it_costs_gigabytes(tmp_path, model):
    path = tmp_path / "zs.pt"
    torch.save({"w": torch.zeros(1).as_strided((2**31 - 1,), (0,))}, path)
    assert path.stat().st_size < 4096
    before = _peak_kib()
    with pytest.raises(ModelFileError, match="zero stride"):
        load_state(path, template=model)
    assert _peak_kib() - before < 200 * 1024  # not the 8 GiB the view would expand to


def test_expanded_and_out_of_bounds_views_are_refused(tmp_path):
    cases = {
        "overlap": torch.zeros(2000).as_strided((1000, 1000), (1, 1)),
        "zero": torch.zeros(3).as_strided((3, 10**6), (1, 0)),
    }
    for name, t in cases.items():
        torch.save({"w": t}, tmp_path / f"{name}.pt")
        with pytest.raises(ModelFileError, match="expanded view"):
            load_state(tmp_path / f"{name}.pt")
    # a storage that claims more elements than its record holds
    (tmp_path / "lie.pt").write_bytes(
        _archive({"w": _Tensor(_Storage(10**9), 0, (10**9,), (1,))}, b"\0" * 16)
    )
    with pytest.raises(ModelFileError):
        load_state(tmp_path / "lie.pt")
    # ordinary non-contiguous views (a transpose) and tied weights stay readable
    w = torch.randn(3, 4)
    torch.save({"a": w, "b": w, "c": w.t()}, tmp_path / "tied.pt")
    state = load_state(tmp_path / "tied.pt")
    torch.testing.assert_close(state["c"], w.t())
    assert view_problem(w.t()) == "" and "zero stride" in view_problem(cases["zero"])


def test_many_views_of_one_storage_exceed_the_byte_budget(tmp_path):
    views = {f"w{i}": _Tensor(_Storage(2**18), 0, (2**18,), (1,)) for i in range(64)}
    (tmp_path / "views.pt").write_bytes(_archive(views, b"\0" * 2**20))
    with pytest.raises(ModelFileError, match="more than"):
        load_state(tmp_path / "views.pt")


def test_compressed_archives_and_legacy_pickles_are_refused(tmp_path, model):
    bomb = _archive(
        {"w": _Tensor(_Storage(2**24), 0, (2**24,), (1,))}, b"\0" * 2**26, zipfile.ZIP_DEFLATED
    )
    assert len(bomb) < 2**20  # 64 MiB of zeros in well under 1 MiB
    (tmp_path / "bomb.pt").write_bytes(bomb)
    before = _peak_kib()
    with pytest.raises(ModelFileError, match="compressed"):
        load_state(tmp_path / "bomb.pt")
    assert _peak_kib() - before < 32 * 1024
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="legacy"):
        load_state(tmp_path / "legacy.pt")


def test_pickled_code_never_runs(tmp_path):
    sentinel = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {sentinel}",))

    (tmp_path / "evil.pt").write_bytes(_archive({"w": Evil()}, b"\0" * 4))
    with pytest.raises(ModelFileError):
        load_state(tmp_path / "evil.pt")
    assert not sentinel.exists()


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_offsets_must_tile_the_data(tmp_path, model):
    save_state(model, tmp_path / "ok.safetensors")
    assert load_state(tmp_path / "ok.safetensors", template=model).keys() == (
        model.state_dict().keys()
    )
    entry = {"dtype": "F32", "shape": [256]}
    overlapping = {f"t{i}": {**entry, "data_offsets": [0, 1024]} for i in range(50)}
    gapped = {
        "a": {**entry, "data_offsets": [0, 1024]},
        "b": {**entry, "data_offsets": [2048, 3072]},
    }
    bad = {
        "overlap": (overlapping, b"\0" * 1024),
        "gap": (gapped, b"\0" * 3072),
        "trailing": ({"a": {**entry, "data_offsets": [0, 1024]}}, b"\0" * 4096),
        "dtype": ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
        "shape": ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
    }
    for name, (header, data) in bad.items():
        (tmp_path / f"{name}.safetensors").write_bytes(_safetensors(header, data))
        with pytest.raises(ModelFileError):
            load_state(tmp_path / f"{name}.safetensors")
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}'
    (tmp_path / "dup.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(ModelFileError, match="unreadable"):
        load_state(tmp_path / "dup.safetensors")


def test_torch_floor_is_enforced(monkeypatch):
    require_safe_torch()  # the installed torch is new enough
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(ModelFileError, match="CVE-2025-32434"):
        require_safe_torch()
