"""CIFAR python batches through the restricted unpickler; hostile pickles never execute."""

import os
import pickle

import numpy as np
import pytest

from gradguard.data import train_test
from gradguard.data.cifar import read_batch
from gradguard.errors import DataError


def _batch(n: int, seed: int, label_key=b"labels", classes=10) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic",
        label_key: rng.integers(0, classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def _write(path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def test_cifar10_folder(tmp_path):
    batches = [_batch(4, s) for s in range(5)]
    for i, b in enumerate(batches, 1):
        _write(tmp_path / f"data_batch_{i}", b)
    _write(tmp_path / "test_batch", _batch(3, 9), protocol=4)
    train, test = train_test(str(tmp_path))
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert train.num_classes == 10 and train.name == "cifar10"
    # channel-first layout: the first 1024 bytes are the red plane
    first = batches[0][b"data"][0]
    assert np.allclose(train.x[0, 0].numpy().ravel(), first[:1024] / 255.0)
    assert np.allclose(train.x[0, 2].numpy().ravel(), first[2048:] / 255.0)
    assert train.y[:4].tolist() == batches[0][b"labels"]


def test_cifar100_folder(tmp_path):
    _write(tmp_path / "train", _batch(6, 1, b"fine_labels", 100))
    _write(tmp_path / "test", _batch(2, 2, b"fine_labels", 100))
    train, test = train_test(str(tmp_path))
    assert train.num_classes == 100 and len(train) == 6 and len(test) == 2


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_hostile_pickle_never_executes(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = _batch(2, 0)
    evil[b"batch_label"] = _Evil(marker)
    path = tmp_path / "data_batch_1"
    _write(path, evil, protocol)
    with pytest.raises(DataError, match="refused global") as e:
        read_batch(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    # a bare reduce to builtins.eval / subprocess is refused the same way
    for fn in (eval, __import__("subprocess").call):
        blob = pickle.dumps(type("R", (), {"__reduce__": lambda self, f=fn: (f, ("1",))})())
        path.write_bytes(blob)
        with pytest.raises(DataError, match="refused global"):
            read_batch(path)
    assert not marker.exists()


def test_malformed_batches(tmp_path):
    path = tmp_path / "b"
    cases = [
        ([1, 2, 3], "must be a dict"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "N x 3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"labels": [0]}, "uint8"),
    ]
    for obj, word in cases:
        _write(path, obj)
        with pytest.raises(DataError, match=word):
            read_batch(path)
    path.write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        read_batch(path)
    path.write_bytes(pickle.dumps(_batch(2, 0))[:-40])
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        read_batch(path)


def test_missing_batch_and_bad_labels(tmp_path):
    _write(tmp_path / "data_batch_1", _batch(2, 0))
    with pytest.raises(DataError, match="test_batch: missing CIFAR batch"):
        train_test(str(tmp_path))
    b = _batch(2, 0)
    b[b"labels"] = [0, 10]
    _write(tmp_path / "test_batch", b)
    with pytest.raises(DataError, match="labels out of range"):
        train_test(str(tmp_path))
