"""A folder of images with one subfolder per class, written as PNGs with matplotlib."""

import numpy as np
import pytest
from matplotlib import pyplot as plt

from gradguard.data import train_test
from gradguard.errors import DataError


def _png(path, array, cmap=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, array, cmap=cmap, vmin=0, vmax=1)


def test_png_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", rng.random((6, 7, 3)))
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    train, test = train_test(str(tmp_path))
    assert len(train) + len(test) == 10 and len(test) == 2
    assert train.x.shape[1:] == (3, 6, 7) and train.num_classes == 2
    assert float(train.x.min()) >= 0 and float(train.x.max()) <= 1
    assert set(train.y.tolist()) | set(test.y.tolist()) == {0, 1}


def test_pixels_round_trip(tmp_path):
    img = np.linspace(0, 1, 4 * 4 * 3).reshape(4, 4, 3)
    for cls in ("a", "b"):
        _png(tmp_path / cls / "x.png", img)
    train, test = train_test(str(tmp_path))
    got = train.x[0].permute(1, 2, 0).numpy()
    assert np.abs(got - img).max() <= 1 / 255 + 1e-6


def test_empty_and_mixed(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        train_test(str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no PNG or JPEG"):
        train_test(str(tmp_path))
    _png(tmp_path / "a" / "1.png", np.zeros((5, 5, 3)))
    _png(tmp_path / "b" / "2.png", np.zeros((6, 5, 3)))
    with pytest.raises(DataError, match="differ in size"):
        train_test(str(tmp_path))


def test_corrupt_image(tmp_path):
    _png(tmp_path / "a" / "1.png", np.zeros((5, 5, 3)))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="2.png: not a readable image"):
        train_test(str(tmp_path))
