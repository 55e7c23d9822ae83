"""Test-only: make torchvision accept generated upstream-format CIFAR-10 / MNIST files.

CIFAR-10 and MNIST cannot be downloaded on the test machines, so the shipped-sweep smoke test writes files in the
exact upstream on-disk format under ``$AESWEEP_TEST_DATA`` and points torchvision's md5 tables at those files.
``trust_generated_files`` runs in the test process and, as Ray's ``worker_process_setup_hook``, in every Ray
worker, so the real loaders (checksum verification included) run unchanged everywhere.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

MNIST_ORDER = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust_generated_files() -> None:
    root = os.environ.get("AESWEEP_TEST_DATA")
    if not root:
        return
    import torchvision

    cifar = Path(root) / "cifar-10-batches-py"
    if cifar.is_dir():
        cls = torchvision.datasets.CIFAR10
        cls.train_list = [[f"data_batch_{i}", _md5(cifar / f"data_batch_{i}")] for i in range(1, 6)]
        cls.test_list = [["test_batch", _md5(cifar / "test_batch")]]
        cls.meta = {**cls.meta, "md5": _md5(cifar / "batches.meta")}
    mnist = Path(root) / "MNIST" / "raw"
    if mnist.is_dir():
        torchvision.datasets.MNIST.resources = [(name, _md5(mnist / name)) for name in MNIST_ORDER]
