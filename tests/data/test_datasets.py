"""Tests of aesweep.data: loaders on files in the exact upstream on-disk formats, checksums and their errors, the
generated shapes dataset, seeded subsets and splits, device batching and device-side transforms."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from aesweep.data import datasets
from aesweep.data import files as files_mod
from aesweep.data.datasets import load_dataset
from aesweep.data.files import DataError
from aesweep.spec.trial import DatasetConfig
from tests.support.upstream_files import (
    CIFAR_NAMES,
    cifar_files,
    frey_ff,
    gz,
    idx_files,
    md5,
    write,
    write_frey,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def snapshot(root: Path) -> dict[str, str]:
    """Every data file under ``root`` and its md5; the empty inter-process lock files (``.NAME.lock``, see
    data.preparing) are not data and stay after a failed preparation by design."""
    return {str(p.relative_to(root)): md5(p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".lock"))}


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 in the upstream format: pickles written by Python 2, i.e. keys and strings are py2 `str`. They load as
# str under encoding="latin1" (what torchvision uses) and as b"data" / b"labels" under encoding="bytes".


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """Upstream-format CIFAR-10 files under tmp_path/data, torchvision's md5 tables pointed at them."""
    files, arrays = cifar_files()
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5(files[f"data_batch_{i}"])] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(files["test_batch"])]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(files["batches.meta"])})
    root = tmp_path / "data"
    write(root / "cifar-10-batches-py", files)
    return root, files, arrays


def test_upstream_format_helper_matches_python2_pickles(cifar):
    root, files, _ = cifar
    entry = pickle.loads(files["data_batch_1"], encoding="bytes")
    assert {b"data", b"labels", b"batch_label"} <= entry.keys()
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (20, 3072)
    assert "data" in pickle.loads(files["data_batch_1"], encoding="latin1")


def test_cifar10_reads_upstream_files_as_nchw(cifar):
    root, _, arrays = cifar
    ds = load_dataset(DatasetConfig(name="cifar10", root=str(root), download=False, val_fraction=0))
    train = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)])
    labels = np.concatenate([arrays[f"data_batch_{i}/labels"] for i in range(1, 6)])
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape == (100, 3, 32, 32)
    assert np.array_equal(ds.train.images.numpy(), train)  # val_fraction=0 keeps the upstream order
    assert np.array_equal(ds.train.labels.numpy(), labels) and ds.train.labels.dtype == torch.int64
    assert np.array_equal(ds.test.images.numpy(), arrays["test_batch"])
    assert len(ds.val) == 0
    assert (ds.channels, ds.image_size, ds.num_classes, ds.flip_ok) == (3, (32, 32), 10, True)
    assert ds.class_names == tuple(CIFAR_NAMES)


def test_cifar10_env_root(cifar, monkeypatch):
    root, _, arrays = cifar
    monkeypatch.setenv("AESWEEP_DATA", str(root))
    ds = load_dataset(DatasetConfig(name="cifar10", download=False, val_fraction=0))
    assert np.array_equal(ds.test.images.numpy(), arrays["test_batch"])


def test_cifar10_flipped_byte_is_a_checksum_error_naming_the_file(cifar):
    root, _, _ = cifar
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    before = snapshot(root)
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(root), download=True))
    message = str(err.value)
    assert str(bad) in message and "checksum mismatch" in message and "\n" not in message
    assert md5(bytes(raw)) in message  # the md5 it found, beside the one it expected
    assert snapshot(root) == before


def test_cifar10_missing_file_without_download(cifar):
    root, _, _ = cifar
    missing = root / "cifar-10-batches-py" / "data_batch_1"
    missing.unlink()
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(root), download=False))
    message = str(err.value)
    assert message.startswith("cifar10: ") and str(missing) in message and "not found" in message
    assert "\n" not in message


def test_cifar10_failed_download_leaves_nothing_behind(cifar, monkeypatch):
    root, files, _ = cifar
    (root / "cifar-10-batches-py" / "data_batch_1").unlink()
    before = snapshot(root)

    def broken_download(self):  # half a file, then the network goes away
        folder = Path(self.root) / self.base_folder
        folder.mkdir(parents=True)
        (folder / "data_batch_1").write_bytes(files["data_batch_1"][:100])
        raise URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", broken_download)
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(root), download=True))
    message = str(err.value)
    assert "data_batch_1 not found and download failed (URLError" in message and "\n" not in message
    assert err.value.__suppress_context__  # no torchvision traceback chained underneath
    assert snapshot(root) == before
    # the temporary directory is gone (the lock file stays, empty)
    assert sorted(p.name for p in root.iterdir()) == [".cifar10.lock", "cifar-10-batches-py"]


def test_cifar10_corrupt_download_is_not_moved_into_place(cifar, monkeypatch):
    root, files, _ = cifar
    (root / "cifar-10-batches-py" / "data_batch_2").unlink()
    before = snapshot(root)

    def corrupt_download(self):
        write(Path(self.root) / self.base_folder, {**files, "data_batch_2": files["data_batch_2"][:-7]})

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", corrupt_download)
    with pytest.raises(DataError, match="download failed .*checksum mismatch"):
        load_dataset(DatasetConfig(name="cifar10", root=str(root), download=True))
    assert snapshot(root) == before


def test_cifar10_download_moves_verified_files_into_place(cifar, monkeypatch):
    root, files, arrays = cifar
    for name in ("data_batch_4", "test_batch"):
        (root / "cifar-10-batches-py" / name).unlink()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download",
                        lambda self: write(Path(self.root) / self.base_folder, files))
    ds = load_dataset(DatasetConfig(name="cifar10", root=str(root), download=True, val_fraction=0))
    assert np.array_equal(ds.test.images.numpy(), arrays["test_batch"])
    assert snapshot(root) == {f"cifar-10-batches-py/{n}": md5(raw) for n, raw in sorted(files.items())}


# --------------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: gzipped IDX files.


def patch_resources(monkeypatch, cls, archives: dict[str, bytes]) -> None:
    order = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setattr(cls, "resources", [(name, md5(archives[name])) for name in order])


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    files, arrays = idx_files()
    archives = gz(files)
    patch_resources(monkeypatch, torchvision.datasets.MNIST, archives)
    root = tmp_path / "data"
    write(root / "MNIST" / "raw", archives)
    return root, archives, arrays


def test_mnist_reads_gzipped_idx_files(mnist):
    root, _, arrays = mnist
    ds = load_dataset(DatasetConfig(name="mnist", root=str(root), download=False, val_fraction=0))
    assert ds.train.images.shape == (30, 1, 28, 28) and ds.train.images.dtype == torch.uint8
    assert np.array_equal(ds.train.images[:, 0].numpy(), arrays["train"])
    assert np.array_equal(ds.train.labels.numpy(), arrays["train/labels"])
    assert np.array_equal(ds.test.images[:, 0].numpy(), arrays["t10k"])
    assert (ds.channels, ds.image_size, ds.num_classes, ds.flip_ok) == (1, (28, 28), 10, False)
    # A second load reuses the extracted files; a stale (truncated) extraction is redone from the archive.
    raw_images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw_images.write_bytes(raw_images.read_bytes()[:-28])
    again = load_dataset(DatasetConfig(name="mnist", root=str(root), download=False, val_fraction=0))
    assert torch.equal(again.train.images, ds.train.images)


def test_mnist_flipped_byte_leaves_root_unchanged(mnist):
    root, archives, _ = mnist
    bad = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"  # the last file: nothing may be extracted before it
    raw = bytearray(archives[bad.name])
    raw[len(raw) // 2] ^= 0x01
    bad.write_bytes(bytes(raw))
    before = snapshot(root)
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="mnist", root=str(root), download=False))
    message = str(err.value)
    assert message.startswith(f"{bad}: checksum mismatch") and "\n" not in message
    assert snapshot(root) == before


def test_mnist_missing_file_without_download(mnist):
    root, _, _ = mnist
    missing = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    missing.unlink()
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="mnist", root=str(root), download=False))
    assert str(missing) in str(err.value) and "not found" in str(err.value) and "\n" not in str(err.value)
    assert not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.fixture
def system_fashion(tmp_path, monkeypatch):
    """Fashion-MNIST archives in a stand-in for the system directory, the root empty."""
    files, arrays = idx_files(n_train=24, n_test=10, seed=1)
    archives = gz(files)
    patch_resources(monkeypatch, torchvision.datasets.FashionMNIST, archives)
    monkeypatch.setitem(datasets.IDX_MD5, "FashionMNIST", {name: md5(raw) for name, raw in files.items()})
    system = tmp_path / "system"
    write(system, archives)
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", (tmp_path / "absent", system))
    return tmp_path / "data", system, files, arrays


def test_fashion_mnist_found_in_system_dir(system_fashion):
    root, system, files, arrays = system_fashion
    ds = load_dataset(DatasetConfig(name="fashion_mnist", root=str(root), download=False, val_fraction=0))
    assert np.array_equal(ds.train.images[:, 0].numpy(), arrays["train"])
    assert np.array_equal(ds.test.labels.numpy(), arrays["t10k/labels"])
    assert ds.flip_ok and ds.class_names[0] == "T-shirt/top"
    # Extracted into the root, archives left where they are; later loads check the extracted files.
    assert snapshot(root) == {f"FashionMNIST/raw/{n}": md5(raw) for n, raw in sorted(files.items())}
    for archive in system.iterdir():
        archive.unlink()
    load_dataset(DatasetConfig(name="fashion_mnist", root=str(root), download=False))


def test_fashion_mnist_recompressed_archive_is_checked_by_payload(system_fashion):
    # A distribution may recompress the archives (Debian does): the .gz md5 differs, the payload must not.
    root, system, files, arrays = system_fashion
    write(system, gz(files, compresslevel=1))
    ds = load_dataset(DatasetConfig(name="fashion_mnist", root=str(root), download=False, val_fraction=0))
    assert np.array_equal(ds.test.images[:, 0].numpy(), arrays["t10k"])

    root2 = root.parent / "data2"
    tampered = bytearray(files["train-images-idx3-ubyte"])
    tampered[-1] ^= 0xFF  # a valid gzip of the wrong payload
    write(system, gz({"train-images-idx3-ubyte": bytes(tampered)}))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_dataset(DatasetConfig(name="fashion_mnist", root=str(root2), download=False))
    assert str(err.value).startswith(str(system / "train-images-idx3-ubyte.gz"))
    assert not root2.exists() or snapshot(root2) == {}


REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL_FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="real Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_real_files(tmp_path):
    ds = load_dataset(DatasetConfig(name="fashion_mnist", root=str(tmp_path), download=False, val_fraction=0))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (60000, 0, 10000)
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape[1:] == (1, 28, 28)
    assert ds.num_classes == 10
    assert torch.equal(torch.bincount(ds.train.labels, minlength=10), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.test.labels, minlength=10), torch.full((10,), 1000))
    assert 0 < ds.train.images.float().mean() < 255


# The worker of the concurrent-preparation test: waits for the start signal, loads Fashion-MNIST from an empty
# root, prints a digest of the arrays it got (or the error it hit).
_PREPARE_WORKER = r"""
import hashlib, sys, time
from pathlib import Path
root, go = sys.argv[1], Path(sys.argv[2])
from aesweep.data.datasets import load_dataset
from aesweep.spec.trial import DatasetConfig
from tests.support.upstream_files import CIFAR_NAMES, cifar_files, frey_ff, gz, idx_files, md5, py2_pickle, write, write_frey, Py2Str
while not go.exists():
    time.sleep(0.005)
try:
    ds = load_dataset(DatasetConfig(name="fashion_mnist", root=root, download=False, val_fraction=0))
except Exception as err:
    print("ERROR", type(err).__name__, err)
    sys.exit(1)
digest = hashlib.sha256()
for split in (ds.train, ds.test):
    digest.update(split.images.numpy().tobytes())
    digest.update(split.labels.numpy().tobytes())
print("OK", len(ds.train), len(ds.test), digest.hexdigest())
"""


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="real Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
def test_eight_processes_prepare_one_empty_root_at_once(tmp_path):
    """The first wave of a sweep on a new machine (or every node of a cluster sharing a root): 8 processes
    extract Fashion-MNIST into one empty root at the same moment. All get the same, verified arrays; no
    temporary file is left behind."""
    import subprocess
    import sys

    root, go = tmp_path / "root", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _PREPARE_WORKER, str(root), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(8)]
    # Every process is imported and polling before the signal (imports take seconds on 2 cores; a generous fixed
    # wait keeps the start simultaneous without a timing assert).
    import time

    time.sleep(2.0)
    go.touch()
    outputs = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert len(set(outputs)) == 1, outputs
    assert outputs[0].startswith("OK 60000 10000 ")
    raw = root / "FashionMNIST" / "raw"
    for name, expected in datasets.IDX_MD5["FashionMNIST"].items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == expected
    assert not [p.name for p in raw.iterdir() if p.name.endswith(".part")]


def test_preparing_serialises_writers_across_processes(tmp_path):
    """Two holders of one dataset's lock never overlap: a child process cannot take it while we hold it."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    took = ctx.Event()
    with files_mod.preparing(tmp_path, "x"):
        child = ctx.Process(target=_take_lock, args=(str(tmp_path), took))
        child.start()
        assert not took.wait(1.0)
    assert took.wait(60)
    child.join(30)
    assert child.exitcode == 0


def _take_lock(root: str, took) -> None:
    with files_mod.preparing(Path(root), "x"):
        took.set()


def test_preparing_times_out_with_one_line(tmp_path):
    with files_mod.preparing(tmp_path, "x"):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_lock_with_timeout, args=(str(tmp_path), queue))
        child.start()
        message = queue.get(timeout=60)
        child.join(30)
    assert message.startswith("x: another process has held ") and ".x.lock" in message and "\n" not in message


def _lock_with_timeout(root: str, queue) -> None:
    try:
        with files_mod.preparing(Path(root), "x", timeout=0.2):
            queue.put("took it")
    except DataError as err:
        queue.put(str(err))


# --------------------------------------------------------------------------------------------------------------
# shapes


def keys(split) -> set[tuple[int, ...]]:
    """Factor tuples identify a shapes image uniquely."""
    return {tuple(row) for row in split.factors.long().tolist()}


def test_shapes_dataset():
    ds = load_dataset(DatasetConfig(name="shapes", val_fraction=0.1, seed=0))
    splits = (ds.train, ds.val, ds.test)
    assert sum(len(s) for s in splits) == 8340 == 3 * sum((29 - s) ** 2 for s in range(7, 15))
    assert len(ds.test) == 8340 // 6
    assert ds.class_names == ("circle", "square", "triangle") and ds.factor_names == ("shape", "size", "x", "y")
    images = torch.cat([s.images for s in splits])
    factors = torch.cat([s.factors for s in splits])
    labels = torch.cat([s.labels for s in splits])
    assert len(torch.unique(images.flatten(1), dim=0)) == 8340
    assert set(images.unique().tolist()) == {0, 255}
    assert torch.equal(labels, factors[:, 0].long())
    assert torch.equal(torch.bincount(labels), torch.full((3,), 2780))
    size, x, y = factors[:, 1], factors[:, 2], factors[:, 3]
    assert size.min() == 7 and size.max() == 14
    assert (x >= 0).all() and (y >= 0).all() and (x + size <= 28).all() and (y + size <= 28).all()
    # The white pixels' bounding box is exactly (x, y, size) for every image.
    mask = images[:, 0] > 0
    rows, cols = mask.any(2), mask.any(1)
    ar = torch.arange(28)
    top, left = torch.where(rows, ar, 99).min(1).values, torch.where(cols, ar, 99).min(1).values
    bottom, right = torch.where(rows, ar, -1).max(1).values, torch.where(cols, ar, -1).max(1).values
    assert torch.equal(top, y.long()) and torch.equal(left, x.long())
    assert torch.equal(bottom - top + 1, size.long()) and torch.equal(right - left + 1, size.long())
    # Shape by area: squares fill the box, discs about pi/4 of it, triangles about half; triangles are symmetric.
    fill = mask.flatten(1).sum(1) / size**2
    assert torch.all(fill[labels == 1] == 1)
    assert torch.all((fill[labels == 0] - torch.pi / 4).abs() < 0.08)
    assert torch.all((fill[labels == 2] > 0.5) & (fill[labels == 2] < 0.65))  # pixel staircase: a bit over s^2/2
    tri = mask[labels == 2]
    tri_x, tri_s = x[labels == 2].long(), size[labels == 2].long()
    for i in range(0, len(tri), 97):  # mirror within the bounding box
        box = tri[i, :, tri_x[i]:tri_x[i] + tri_s[i]]
        assert torch.equal(box, box.flip(-1))
        assert box.sum(1)[box.any(1)].diff().ge(0).all()  # widening downwards: it points up


def test_shapes_split_depends_on_seed_only():
    a = load_dataset(DatasetConfig(name="shapes", seed=1))
    b = load_dataset(DatasetConfig(name="shapes", seed=1))
    c = load_dataset(DatasetConfig(name="shapes", seed=2))
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert torch.equal(getattr(a, name).factors, getattr(b, name).factors)
    assert keys(a.test) != keys(c.test)


# --------------------------------------------------------------------------------------------------------------
# Subsets and splits


def test_subset_and_val_sizes_deterministic_and_disjoint():
    cfg = DatasetConfig(name="shapes", train_size=1000, test_size=200, val_fraction=0.2, seed=3)
    ds = load_dataset(cfg)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (800, 200, 200)
    again = load_dataset(cfg)
    assert keys(ds.train) == keys(again.train) and keys(ds.val) == keys(again.val)
    assert keys(ds.test) == keys(again.test)
    assert not keys(ds.train) & keys(ds.val) and not keys(ds.train) & keys(ds.test)
    assert not keys(ds.val) & keys(ds.test)
    # train and val come from the upstream train split, test from the upstream test split
    full = load_dataset(DatasetConfig(name="shapes", val_fraction=0, seed=3))
    assert keys(ds.train) | keys(ds.val) <= keys(full.train) and keys(ds.test) <= keys(full.test)
    other = load_dataset(cfg.model_copy(update={"seed": 4}))
    assert keys(other.train) != keys(ds.train) and keys(other.test) != keys(ds.test)
    # Growing train_size under one seed only adds images; the test subset does not move.
    smaller = load_dataset(cfg.model_copy(update={"train_size": 500}))
    assert keys(smaller.train) | keys(smaller.val) <= keys(ds.train) | keys(ds.val)
    assert keys(smaller.test) == keys(ds.test)


def test_subset_of_real_format_files(cifar):
    root, _, arrays = cifar
    ds = load_dataset(DatasetConfig(name="cifar10", root=str(root), download=False, train_size=50, test_size=7,
                                    val_fraction=0.2, seed=5))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 10, 7)
    written = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)]).reshape(100, -1)
    rows = {r.tobytes(): i for i, r in enumerate(written)}
    train_rows = {rows[r.tobytes()] for r in ds.train.images.flatten(1).numpy()}
    val_rows = {rows[r.tobytes()] for r in ds.val.images.flatten(1).numpy()}
    assert len(train_rows) == 40 and len(val_rows) == 10 and not train_rows & val_rows


def test_subset_errors():
    with pytest.raises(DataError, match="train_size: 9000 requested but the split holds only 6950"):
        load_dataset(DatasetConfig(name="shapes", train_size=9000))
    ds = load_dataset(DatasetConfig(name="shapes", train_size=5, test_size=3, val_fraction=0.01))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 1, 3)  # a requested val split is never empty


def test_registry_has_the_datasets():
    from aesweep.registry import DATASETS

    assert {"cifar10", "mnist", "fashion_mnist", "shapes", "frey_face"} <= set(DATASETS.names())
    assert DATASETS.doc("shapes").startswith("Generated shapes")


# --------------------------------------------------------------------------------------------------------------
# FreyFace: a frey_rawface.mat written by scipy.io.savemat in the upstream format (MATLAB v5, ff uint8 560 x 1965)


@pytest.fixture
def frey_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AESWEEP_DATA", str(tmp_path))
    write_frey(tmp_path / "FreyFace" / "frey_rawface.mat")
    return tmp_path


def test_frey_face_shapes_split_sizes_and_pixel_order(frey_root):
    ds = load_dataset(DatasetConfig(name="frey_face", val_fraction=0.0))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1565, 0, 400)
    assert ds.train.images.shape[1:] == (1, 28, 20) and ds.train.images.dtype == torch.uint8
    assert ds.image_size == (28, 20) and ds.channels == 1
    assert ds.num_classes == 0 and bool((ds.train.labels == -1).all()) and bool((ds.test.labels == -1).all())
    # Rows are 28 rows of 20 pixels: down a row adds 7, right a column adds 3 (a transposed read would not).
    images = torch.cat([ds.train.images, ds.test.images])[:, 0].long()
    assert bool(((images[:, 1, 0] - images[:, 0, 0]) % 256 == 7).all())  # down a row: +7
    assert bool(((images[:, 0, 1] - images[:, 0, 0]) % 256 == 3).all())  # right a column: +3
    expected = torch.from_numpy(frey_ff().T.reshape(-1, 28, 20).copy()).long()
    # Every frame exactly once across the splits.
    assert sorted(map(tuple, images.flatten(1).tolist())) == sorted(map(tuple, expected.flatten(1).tolist()))


def test_frey_face_split_is_seeded_and_folds_give_the_studys_sizes(frey_root):
    a = load_dataset(DatasetConfig(name="frey_face", seed=0))
    b = load_dataset(DatasetConfig(name="frey_face", seed=0))
    c = load_dataset(DatasetConfig(name="frey_face", seed=1))
    assert torch.equal(a.test.images, b.test.images) and not torch.equal(a.test.images, c.test.images)
    # The study's cross-validation: "1,252 training images, 313 validation images, and 400 testing images".
    fold = load_dataset(DatasetConfig(name="frey_face", folds=5, fold=2))
    assert (len(fold.train), len(fold.val), len(fold.test)) == (1252, 313, 400)


def test_frey_face_wrong_layout_is_a_data_error(frey_root):
    write_frey(frey_root / "FreyFace" / "frey_rawface.mat", frey_ff().T.copy())  # 1965 x 560
    with pytest.raises(DataError, match=r"frey_rawface.mat: ff is uint8 \(1965, 560\), expected uint8 \(560, 1965\)"):
        load_dataset(DatasetConfig(name="frey_face"))
    (frey_root / "FreyFace" / "frey_rawface.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a MATLAB file with a variable ff"):
        load_dataset(DatasetConfig(name="frey_face"))


def test_frey_face_missing_without_download(tmp_path):
    with pytest.raises(DataError, match="frey_face: .*FreyFace/frey_rawface.mat not found and download is off"):
        load_dataset(DatasetConfig(name="frey_face", root=str(tmp_path), download=False))


def test_frey_face_download_checks_the_md5(tmp_path, monkeypatch):
    # A real download through urllib, from a file:// URL (no network here), into an empty root.
    upstream = write_frey(tmp_path / "upstream" / "frey_rawface.mat")
    root = tmp_path / "root"
    monkeypatch.setattr(datasets, "FREY_FACE_URL", (tmp_path / "upstream" / "frey_rawface.mat").as_uri())
    with pytest.raises(DataError, match=f"checksum mismatch \\(md5 {md5(upstream)}, expected {datasets.FREY_FACE_MD5}"):
        load_dataset(DatasetConfig(name="frey_face", root=str(root)))
    assert not (root / "FreyFace" / "frey_rawface.mat").exists()  # nothing half-done left in place
    assert [p.name for p in root.iterdir()] == [".frey_face.lock"]  # the (empty) lock file stays
    monkeypatch.setattr(datasets, "FREY_FACE_MD5", md5(upstream))
    ds = load_dataset(DatasetConfig(name="frey_face", root=str(root)))
    assert (root / "FreyFace" / "frey_rawface.mat").read_bytes() == upstream
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1965
