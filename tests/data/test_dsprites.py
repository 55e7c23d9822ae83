"""The dSprites loader on files written in the upstream npz layout (the real file cannot be downloaded here)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from aesweep.data import datasets
from aesweep.data.datasets import DSPRITES_FILE, DataError, load_dataset
from aesweep.spec.trial import DatasetConfig
from tests.support.upstream_files import dsprites_arrays, write_dsprites


@pytest.fixture(scope="module")
def arrays():
    return dsprites_arrays(600, seed=1)


@pytest.fixture
def root(tmp_path, arrays):
    write_dsprites(tmp_path / "dsprites" / DSPRITES_FILE, arrays)
    return tmp_path


def upstream_row(arrays) -> dict[tuple[float, ...], int]:
    """latents_values' factor columns (color dropped) -> row of the file; the test file's rows are distinct."""
    return {tuple(v[1:].astype(np.float32).tolist()): i for i, v in enumerate(arrays["latents_values"])}


def rows_of(split, arrays) -> np.ndarray:
    where = upstream_row(arrays)
    return np.array([where[tuple(f.tolist())] for f in split.factors.numpy()])


@pytest.mark.parametrize("compressed", [True, False], ids=["deflated", "stored"])
def test_images_labels_and_factors_are_the_files_rows(tmp_path, arrays, compressed):
    write_dsprites(tmp_path / "dsprites" / DSPRITES_FILE, arrays, compressed=compressed)
    ds = load_dataset(DatasetConfig(name="dsprites", root=str(tmp_path), val_fraction=0.1))
    assert ds.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert ds.class_names == ("square", "ellipse", "heart") and not ds.flip_ok
    assert (ds.channels, *ds.image_size) == (1, 64, 64)
    n = len(arrays["imgs"])
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (n - n // 10, n // 10)
    seen = []
    for split in (ds.train, ds.val, ds.test):
        rows = rows_of(split, arrays)
        seen.append(rows)
        assert split.images.dtype == torch.uint8 and set(split.images.unique().tolist()) <= {0, 255}
        assert torch.equal(split.images[:, 0], torch.from_numpy(arrays["imgs"][rows] * 255))
        assert torch.equal(split.labels, torch.from_numpy(arrays["latents_classes"][rows, 1]))
        assert torch.equal(split.factors, torch.from_numpy(arrays["latents_values"][rows, 1:].astype(np.float32)))
    every = np.concatenate(seen)
    assert sorted(every.tolist()) == list(range(n))  # disjoint splits covering the file


def test_split_and_subsets_are_seeded_and_nested(root, arrays):
    def load(**kw):
        return load_dataset(DatasetConfig(name="dsprites", root=str(root), val_fraction=0.0, **kw))

    a, b = load(train_size=100, test_size=20), load(train_size=100, test_size=20)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.factors, b.test.factors)
    bigger = load(train_size=200, test_size=40)
    assert set(rows_of(a.train, arrays)) < set(rows_of(bigger.train, arrays))  # a larger train_size adds rows
    assert set(rows_of(a.test, arrays)) < set(rows_of(bigger.test, arrays))
    # The test split does not depend on train_size; another seed draws another split.
    assert torch.equal(load(train_size=50, test_size=20).test.factors, a.test.factors)
    other = load(train_size=100, test_size=20, seed=1)
    assert set(rows_of(other.test, arrays)) != set(rows_of(a.test, arrays))
    with pytest.raises(DataError, match="train_size: 9999 requested but the split holds only 540 images"):
        load(train_size=9999)


def test_a_subset_decodes_only_its_rows(tmp_path, monkeypatch):
    # 12,000 images are 49 MB decoded; the subset of 150 rows must not cost anything near that.
    arrays = dsprites_arrays(12_000, seed=2)
    write_dsprites(tmp_path / "dsprites" / DSPRITES_FILE, arrays)
    monkeypatch.setattr(datasets, "DSPRITES_CHUNK_ROWS", 1024)  # 4 MB per chunk
    full = arrays["imgs"].nbytes
    del arrays
    tracemalloc.start()
    try:
        source = datasets.dsprites(DatasetConfig(name="dsprites", root=str(tmp_path), train_size=100, test_size=50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(source.train), len(source.test)) == (100, 50)
    assert peak < full / 4, f"peak {peak / 2**20:.1f} MB while loading 150 of {full / 2**20:.0f} MB of images"


@pytest.mark.parametrize("folder", ["dsprites-dataset", ""], ids=["upstream-clone", "root"])
def test_the_file_is_found_in_a_clone_of_the_upstream_repository_or_the_root(tmp_path, arrays, folder):
    write_dsprites(tmp_path / folder / DSPRITES_FILE, arrays)
    ds = load_dataset(DatasetConfig(name="dsprites", root=str(tmp_path), train_size=10, test_size=5))
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (10, 5)


def test_a_missing_file_names_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="dsprites", root=str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "dsprites" / DSPRITES_FILE) in message and "github.com/deepmind/dsprites-dataset" in message


@pytest.mark.parametrize("damage, expected", [
    (lambda a: {**a, "imgs": a["imgs"][:, :32]}, "imgs is uint8 (600, 32, 64), expected uint8 (N, 64, 64)"),
    (lambda a: {k: v for k, v in a.items() if k != "latents_classes"}, "not the dSprites npz (KeyError"),
    (lambda a: {**a, "latents_values": a["latents_values"][:, :5]}, "latents_values (600, 5)"),
    (lambda a: {**a, "imgs": a["imgs"] * 255}, "imgs holds values above 1"),
])
def test_a_malformed_file_is_one_line_naming_it(tmp_path, arrays, damage, expected):
    path = write_dsprites(tmp_path / "dsprites" / DSPRITES_FILE, damage(arrays))
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="dsprites", root=str(tmp_path)))
    assert str(err.value).startswith(str(path)) and expected in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_file_is_one_line_naming_it(tmp_path, arrays):
    path = write_dsprites(tmp_path / "dsprites" / DSPRITES_FILE, arrays, compressed=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="dsprites", root=str(tmp_path)))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
