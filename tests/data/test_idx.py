"""IDX files: the real Fashion-MNIST, and every malformed file as one clear DataError."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from gradguard.data import train_test
from gradguard.data.idx import read_idx, system_dir
from gradguard.errors import DataError

needs_fashion = pytest.mark.skipif(
    system_dir("fashion-mnist") is None, reason="dataset-fashion-mnist is not installed"
)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_set(folder: Path, n_train=12, n_test=6, gz=False, size=5) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, size, size)),
            f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, n),
        }
        for name, arr in files.items():
            data = _idx(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads(tmp_path, gz):
    train, test = train_test(str(_write_set(tmp_path / "set", gz=gz)))
    assert train.x.shape == (12, 1, 5, 5) and test.x.shape == (6, 1, 5, 5)
    assert float(train.x.min()) >= 0 and float(train.x.max()) <= 1
    assert train.num_classes == 10 and train.y.dtype.is_floating_point is False


def _expect(path: Path, *words: str) -> None:
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_wrong_magic(tmp_path, gz):
    good = _idx(np.zeros((4, 5, 5)))
    cases = {
        "trunc": (good[:-7], "truncated"),
        "magic": (b"\x01\x02" + good[2:], "magic"),
        "type": (good[:2] + b"\x0d" + good[3:], "not supported"),
        "header": (good[:6], "truncated"),
        "empty": (b"", "magic"),
        "ndim": (bytes([0, 0, 8, 2]) + struct.pack(">II", 2, 2) + bytes(4), "dimensions"),
        "extra": (good + b"\x00", "truncated or corrupt"),
    }
    for name, (blob, word) in cases.items():
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(blob) if gz else blob)
        _expect(path, word)


def test_corrupt_gzip_and_missing(tmp_path):
    good = gzip.compress(_idx(np.zeros((4, 5, 5))))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    _expect(tmp_path / "cut.gz", "cannot read")
    (tmp_path / "garbage.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    _expect(tmp_path / "garbage.gz", "cannot read")
    _expect(tmp_path / "nope", "cannot read")


def test_folder_level_errors(tmp_path):
    folder = _write_set(tmp_path / "a")
    # labels that do not match the images in count
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(5)))
    with pytest.raises(DataError, match="6 images but .* 5 labels"):
        train_test(str(folder))
    # an images file where the labels belong (wrong shape)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros((6, 5, 5))))
    with pytest.raises(DataError, match="3-D and labels 1-D"):
        train_test(str(folder))
    # labels out of range
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.full(6, 12)))
    with pytest.raises(DataError, match="out of range"):
        train_test(str(folder))
    # a missing test split
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing"):
        train_test(str(folder))


@needs_fashion
def test_fashion_mnist_installed():
    train, test = train_test("fashion-mnist")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert sorted(train.y.unique().tolist()) == list(range(10))
    assert train.name == "fashion-mnist"
