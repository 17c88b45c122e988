"""Data sets as tensors in [0, 1], and their partitions across clients.

Every loader returns a :class:`Dataset` of images ``x`` (float32, N x C x H x W, values in
[0, 1]) and integer labels ``y``. ``load_dataset`` accepts a name (``digits``,
``fashion-mnist``, ``mnist``) or a path (IDX folder or file pair, CIFAR python batches, a
folder of images with one subfolder per class).
"""

from gradguard.data.dataset import Dataset
from gradguard.data.load import load_dataset, train_test
from gradguard.data.partition import partition

__all__ = ["Dataset", "load_dataset", "partition", "train_test"]
