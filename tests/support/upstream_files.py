"""Dataset files in their upstream on-disk formats, written by the tests (the real files cannot be downloaded here).

- CIFAR-10: the python pickles, written as Python 2 wrote them (keys and strings are py2 ``str``), so they load as
  ``str`` under encoding="latin1" (what torchvision uses) and as b"data" / b"labels" under encoding="bytes";
- MNIST / Fashion-MNIST: IDX files, gzipped as upstream;
- FreyFace: frey_rawface.mat, MATLAB v5, ff uint8 560 x 1965, written by scipy.io.savemat.
- dSprites: dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz with upstream's keys, dtypes and value tables, any
  number of rows (upstream: all 737,280), deflate-compressed by np.savez_compressed as upstream.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from pathlib import Path

import numpy as np


def md5(raw: bytes) -> str:
    return hashlib.md5(raw).hexdigest()


class Py2Str(bytes):
    """A bytes value pickled as a Python 2 str (SHORT_BINSTRING), as in the upstream CIFAR pickles."""


class Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj: Py2Str) -> None:
        assert len(obj) < 256
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + bytes(obj))

    dispatch[Py2Str] = save_py2str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_files(per_batch: int = 20, seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Upstream-format CIFAR-10 files (name -> bytes) with ``per_batch`` images each, and the arrays written."""
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)  # NCHW
        labels = rng.integers(0, 10, per_batch).tolist()
        # Upstream rows: 3072 bytes, the 1024-byte red plane, then green, then blue, each row-major.
        files[name] = py2_pickle({Py2Str(b"batch_label"): Py2Str(b"training batch 1 of 5"),
                                  Py2Str(b"labels"): labels, Py2Str(b"data"): images.reshape(per_batch, 3072),
                                  Py2Str(b"filenames"): [Py2Str(b"img_%d.png" % i) for i in range(per_batch)]})
        arrays[name] = images
        arrays[name + "/labels"] = np.array(labels)
    files["batches.meta"] = py2_pickle({Py2Str(b"label_names"): [Py2Str(n.encode()) for n in CIFAR_NAMES],
                                        Py2Str(b"num_cases_per_batch"): per_batch, Py2Str(b"num_vis"): 3072})
    return files, arrays


def write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)


def idx_files(n_train: int = 30, n_test: int = 12, seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Uncompressed upstream IDX files (name -> bytes) and their arrays."""
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        files[f"{prefix}-images-idx3-ubyte"] = struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        files[f"{prefix}-labels-idx1-ubyte"] = struct.pack(">II", 2049, n) + labels.tobytes()
        arrays[prefix], arrays[prefix + "/labels"] = images, labels
    return files, arrays


def gz(files: dict[str, bytes], **kwargs) -> dict[str, bytes]:
    return {name + ".gz": gzip.compress(raw, mtime=0, **kwargs) for name, raw in files.items()}


def frey_ff() -> np.ndarray:
    """ff as upstream lays it out: column j is image j, 28 rows x 20 columns row-major; pixel (r, c) of image j
    is (j + 7 r + 3 c) mod 256, so every image and its orientation can be told apart."""
    j, r, c = np.meshgrid(np.arange(1965), np.arange(28), np.arange(20), indexing="ij")
    images = ((j + 7 * r + 3 * c) % 256).astype(np.uint8)  # (1965, 28, 20)
    return np.ascontiguousarray(images.reshape(1965, 560).T)


def write_frey(path: Path, ff: np.ndarray | None = None) -> bytes:
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"ff": frey_ff() if ff is None else ff}, format="5")
    return path.read_bytes()


# dSprites' latent sizes and value tables (the upstream file's metadata): color, shape, scale, orientation, posX, posY.
DSPRITES_SIZES = (1, 3, 6, 40, 32, 32)
DSPRITES_VALUES = (np.ones(1), np.arange(1.0, 4.0), np.linspace(0.5, 1.0, 6), np.linspace(0.0, 2 * np.pi, 40),
                   np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32))


def dsprites_arrays(n: int = 600, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` distinct rows of the dSprites grid in upstream order (sorted by latents_classes, as upstream, whose row
    i is ``ravel_multi_index(classes, DSPRITES_SIZES)``), as the npz holds them: ``imgs`` (n, 64, 64) uint8 in
    {0, 1}, ``latents_values`` (n, 6) float64, ``latents_classes`` (n, 6) int64. Each image is a filled square
    (shape 0), disc (1) or triangle (2) of side 8 + 4 * scale at a place set by posX, posY, so images differ
    wherever those factors do (orientation is not drawn)."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(int(np.prod(DSPRITES_SIZES)), n, replace=False))
    classes = np.stack(np.unravel_index(index, DSPRITES_SIZES), axis=1).astype(np.int64)
    values = np.stack([DSPRITES_VALUES[j][classes[:, j]] for j in range(6)], axis=1)
    imgs = np.zeros((n, 64, 64), np.uint8)
    for i, (_, shape, scale, _, px, py) in enumerate(classes):
        side = 8 + 4 * int(scale)
        r, c = np.mgrid[:side, :side] + 0.5 - side / 2
        mask = [np.ones((side, side), bool), r**2 + c**2 <= (side / 2) ** 2, np.abs(c) <= (r + side / 2) / 2][shape]
        y0, x0 = int(py) * (64 - side) // 31, int(px) * (64 - side) // 31
        imgs[i, y0:y0 + side, x0:x0 + side] = mask
    return {"imgs": imgs, "latents_values": values, "latents_classes": classes}


def write_dsprites(path: Path, arrays: dict[str, np.ndarray] | None = None, compressed: bool = True) -> Path:
    """Write ``arrays`` (default ``dsprites_arrays()``) as the upstream npz, with a pickled ``metadata`` dict like
    upstream's (which the loader must never unpickle)."""
    arrays = dsprites_arrays() if arrays is None else arrays
    metadata = np.array({"description": "test file in the upstream layout", "latents_sizes": np.array(DSPRITES_SIZES),
                         "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY")}, dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays, metadata=metadata)
    return path
