"""Datasets as whole uint8 tensors on the trial's device, batching by index, corruption and augmentation on device.

A registered dataset is one function ``(cfg) -> Source`` returning the upstream train and test splits as CPU
tensors; ``load_dataset`` does the common work (seeded subsets, a seeded validation carve, one move to the device).
Trials are small, so overhead dominates: no DataLoader, no per-sample PIL work, no per-batch host-device copy.
Images stay uint8 on the device (4x less memory than float) and become float32 in [0, 1] one batch at a time.

Files on disk: ``cfg.root``, else ``$AESWEEP_DATA``, else ``~/.cache/aesweep``, laid out as torchvision lays them out
(``cifar-10-batches-py/``, ``MNIST/raw/``, ``FashionMNIST/raw/``), plus ``FreyFace/`` and ``dsprites/``. Every file
torchvision reads is checked against an upstream md5 first (FreyFace and dSprites, which have none to check a file
put in place against, by their layout), and any problem is a ``DataError`` with a one-line message naming the file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aesweep.data.files import (
    DataError,
    _check,
    _construct,
    _download,
    _fetch,
    _gunzip,
    _md5,
    _mismatch,
    _not_found,
    preparing,
)
from aesweep.registry import DATASETS

# torchvision is imported inside the loaders that read its files: importing it pulls in torchvision.models and
# torch._dynamo (~1.5 s of a Ray worker's start-up on 2 cores), which a shapes sweep never needs.

if TYPE_CHECKING:
    from aesweep.spec.trial import DatasetConfig

# Where a system package may have installed Fashion-MNIST (Debian: dataset-fashion-mnist). Searched, in order, when
# the data root lacks the files; they are verified there and extracted into the root.
FASHION_MNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

# md5 of the uncompressed upstream IDX files. torchvision's tables hold the md5 of the upstream .gz archives, but a
# distribution may recompress them (Debian's .gz differ byte-wise from upstream while the payload is identical), so
# a .gz whose own md5 does not match is accepted when its decompressed payload matches here. Same values as in the
# checksum lists of other public MNIST/Fashion-MNIST loaders.
IDX_MD5: dict[str, dict[str, str]] = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

SHAPE_NAMES = ("circle", "square", "triangle")
SHAPE_FACTORS = ("shape", "size", "x", "y")


# ------------------------------------------------------------------------------------------------------------
# Containers


@dataclass
class Split:
    """One split. ``images``: uint8 (N, C, H, W) in 0..255; ``labels``: int64 (N,); ``factors``: float32 (N, F)
    generative factors or None. All three on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    factors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # A registered loader that returns the wrong layout should fail here, not deep inside a trial.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if self.factors is not None and (self.factors.ndim != 2 or len(self.factors) != len(self.images)):
            raise ValueError(f"factors must be (N, F), got {tuple(self.factors.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice | torch.Tensor) -> Split:
        """Rows of the split: a slice gives views (no copy), an index tensor (on the split's device) a gather."""
        return Split(self.images[index], self.labels[index], None if self.factors is None else self.factors[index])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device),
                     None if self.factors is None else self.factors.to(device))


@dataclass
class Source:
    """What a registered dataset function returns: the upstream train and test splits, on the CPU."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    flip_ok: bool  # horizontal flip is label-preserving (not for digits)
    factor_names: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A loaded dataset: ``train`` / ``val`` / ``test`` splits (uint8 images, all on one device) and metadata."""

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    flip_ok: bool
    factor_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.train.images.shape[2], self.train.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.train.device

    def to(self, device: torch.device | str) -> Dataset:
        """All splits on ``device``, moved once; batches are then index slices there."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))


# ------------------------------------------------------------------------------------------------------------
# Loading


def _generator(seed: int, stream: str) -> torch.Generator:
    # One independent stream per purpose: the test subset must not change when train_size does, and the shapes
    # train/test split must not correlate with the subset drawn from it under the same seed.
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _order(n: int, size: int | None, gen: torch.Generator, what: str) -> torch.Tensor:
    """The first ``size`` entries (all when None) of a seeded permutation of ``range(n)``."""
    if size is not None and size > n:
        raise DataError(f"{what}: {size} requested but the split holds only {n} images")
    return torch.randperm(n, generator=gen)[:size]


def load_dataset(cfg: DatasetConfig, device: torch.device | str | None = None) -> Dataset:
    """Load ``cfg.name``: subset train (``train_size``) and test (``test_size``), carve ``val_fraction`` of the
    train subset as validation (all seeded by ``cfg.seed``), and move everything to ``device`` (None: stay on CPU).

    Deterministic given the config; the three splits are disjoint and keep the upstream order within them. Under
    one seed a larger ``train_size`` only adds rows to train+val (a prefix of one permutation), as
    label-efficiency curves want.
    """
    source: Source = DATASETS.get(cfg.name)(cfg)
    order = _order(len(source.train), cfg.train_size, _generator(cfg.seed, "train"), f"{cfg.name}: train_size")
    test_rows = _order(len(source.test), cfg.test_size, _generator(cfg.seed, "test"), f"{cfg.name}: test_size")
    if cfg.folds is not None:
        # k-fold: fold i is the i-th of k near-equal slices of the seeded permutation; the folds of one seed
        # partition the train subset, so the k trials of a cross-validation see every image validated once.
        if len(order) < cfg.folds:
            raise DataError(f"{cfg.name}: {cfg.folds} folds need at least {cfg.folds} train images, got {len(order)}")
        bounds = [len(order) * i // cfg.folds for i in range(cfg.folds + 1)]
        held = torch.zeros(len(order), dtype=torch.bool)
        held[bounds[cfg.fold]:bounds[cfg.fold + 1]] = True
        val_rows, train_rows = order[held], order[~held]
    else:
        n_val = int(cfg.val_fraction * len(order) + 0.5)
        if cfg.val_fraction > 0:
            n_val = max(n_val, 1)  # an empty validation split would break every val/ metric downstream
        if n_val >= len(order):
            raise DataError(f"{cfg.name}: val_fraction {cfg.val_fraction} of {len(order)} train images leaves "
                            "none to train on")
        val_rows, train_rows = order[:n_val], order[n_val:]
    train = source.train[train_rows.sort().values]
    val = source.train[val_rows.sort().values]
    test = source.test[test_rows.sort().values]
    dataset = Dataset(cfg.name, train, val, test, tuple(source.class_names), source.flip_ok,
                      tuple(source.factor_names))
    return dataset.to(device) if device is not None else dataset


def data_root(cfg: DatasetConfig) -> Path:
    """``cfg.root``, else ``$AESWEEP_DATA``, else ``~/.cache/aesweep``."""
    return Path(cfg.root or os.environ.get("AESWEEP_DATA") or "~/.cache/aesweep").expanduser()


# How long a process waits for another one that is preparing the same dataset (a download of CIFAR-10 on a slow
# link takes minutes) before it gives up with a message instead of hanging a trial forever.

@DATASETS.register("cifar10", shape=(3, 32, 32))
def cifar10(cfg: DatasetConfig) -> Source:
    """CIFAR-10: 50000 train / 10000 test RGB 32x32 images, 10 classes (torchvision files, md5-verified)."""
    import torchvision

    cls, root = torchvision.datasets.CIFAR10, data_root(cfg)
    folder = root / cls.base_folder
    md5s = {folder / f: md5 for f, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]}
    with preparing(root, "cifar10"):
        missing = [path for path in md5s if not path.is_file()]
        for path, md5 in md5s.items():
            if path not in missing:
                _check(path, md5)
        if missing:
            if not cfg.download:
                raise _not_found("cifar10", missing[0])
            _download("cifar10", root, missing, lambda tmp: _fetch(cls, tmp), md5s)

    def split(train: bool) -> tuple[Split, list[str]]:
        ds = _construct("cifar10", lambda: cls(str(root), train=train, download=False), folder)
        # torchvision keeps CIFAR as NHWC numpy; the upstream rows are channel planes, so NCHW is a transpose back.
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.as_tensor(ds.targets, dtype=torch.int64)), ds.classes

    (train, classes), (test, _) = split(True), split(False)
    return Source(train, test, tuple(classes), flip_ok=True)


def _gz_size(path: Path) -> int:
    """The payload size that gzip's trailer records (mod 2^32); -1 for a file too short to hold one."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) < 4:
            return -1
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _idx_files(cls: type, root: Path, search_dirs: tuple[Path, ...]) -> list[Path]:
    """Make ``root/<Class>/raw`` hold the verified, uncompressed IDX files torchvision reads; return the .gz paths
    found nowhere. Sources, in order: the .gz in the root; the uncompressed file alone in the root; the .gz in a
    search dir. A .gz passes if its md5 matches torchvision's table or its payload matches ``IDX_MD5`` (a
    distribution's recompressed copy). Extraction goes to ``.part`` files that are renamed into place only once
    every file has passed, so a corrupt or missing file leaves the root as it was."""
    raw = root / cls.__name__ / "raw"
    payload_md5 = IDX_MD5.get(cls.__name__, {})
    missing: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    try:
        for filename, md5 in cls.resources:
            gz = raw / os.path.basename(filename)
            out = raw / gz.name.removesuffix(".gz")
            want = payload_md5.get(out.name)
            if gz.is_file():
                src = gz
            elif out.is_file():
                if want is not None:  # nothing to check it against but the upstream payload md5
                    _check(out, want)
                continue
            else:
                src = next((d / gz.name for d in search_dirs if (d / gz.name).is_file()), None)
                if src is None:
                    missing.append(gz)
                    continue
            archive_ok = _md5(src) == md5
            fresh = out.is_file() and out.stat().st_size == _gz_size(src)  # a stale extraction is redone
            if archive_ok and fresh:
                continue
            part = None
            if not fresh:
                # A unique name even under the lock: a process whose lock was broken (or a root that a lockless
                # older aesweep also writes to) can never rename another's extraction away.
                raw.mkdir(parents=True, exist_ok=True)
                handle, part_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=raw)
                os.close(handle)
                part = Path(part_name)
                staged.append((part, out))
            got = _gunzip(src, part)
            if got is None or (not archive_ok and got != want):
                raise _mismatch(src, _md5(src), md5)
        if not missing:
            for part, out in staged:
                os.replace(part, out)
    finally:
        for part, _ in staged:
            part.unlink(missing_ok=True)
    return missing


def _idx_dataset(name: str, cls: type, cfg: DatasetConfig, flip_ok: bool, search_dirs: tuple[Path, ...] = ()):
    root = data_root(cfg)
    with preparing(root, name):
        missing = _idx_files(cls, root, search_dirs)
        if missing:
            if not cfg.download:
                raise _not_found(name, missing[0])
            md5s = {root / cls.__name__ / "raw" / os.path.basename(f): md5 for f, md5 in cls.resources}
            _download(name, root, missing, lambda tmp: _fetch(cls, tmp), md5s)
            _idx_files(cls, root, search_dirs)

    def split(train: bool) -> Split:
        ds = _construct(name, lambda: cls(str(root), train=train, download=False), root / cls.__name__ / "raw")
        return Split(ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64))

    return Source(split(True), split(False), tuple(cls.classes), flip_ok=flip_ok)


@DATASETS.register("mnist", shape=(1, 28, 28))
def mnist(cfg: DatasetConfig) -> Source:
    """MNIST digits: 60000 train / 10000 test grey 28x28 images, 10 classes (torchvision files, md5-verified)."""
    import torchvision

    return _idx_dataset("mnist", torchvision.datasets.MNIST, cfg, flip_ok=False)  # a flipped 2 or 7 is no digit


@DATASETS.register("fashion_mnist", shape=(1, 28, 28))
def fashion_mnist(cfg: DatasetConfig) -> Source:
    """Fashion-MNIST: 60000 train / 10000 test grey 28x28 images, 10 classes (system copy or torchvision)."""
    import torchvision

    return _idx_dataset("fashion_mnist", torchvision.datasets.FashionMNIST, cfg, flip_ok=True,
                        search_dirs=FASHION_MNIST_DIRS)


def make_shapes(canvas: int = 28, sizes: range = range(7, 15)) -> tuple[torch.Tensor, torch.Tensor]:
    """Every filled white circle, square and up-pointing isosceles triangle of side ``size`` (bounding box) at every
    position that fits on a black ``canvas``: uint8 images (N, 1, canvas, canvas) in {0, 255} and float32 factors
    (N, 4) = (shape index, size, x, y), (x, y) the column and row of the bounding box's top-left pixel.
    N = 3 * sum((canvas + 1 - s)^2): 8340 for the defaults, all distinct."""
    images, factors = [], []
    for s in sizes:
        c = torch.arange(s) + 0.5 - s / 2  # pixel-centre offsets from the box centre
        circle = c[:, None] ** 2 + c[None, :] ** 2 <= (s / 2) ** 2
        square = torch.ones(s, s, dtype=torch.bool)
        # Row r spans |offset| <= (r + 1) / 2: apex 1-2 pixels wide on top, the full side at the bottom.
        triangle = c[None, :].abs() <= (torch.arange(s)[:, None] + 1) / 2
        masks = torch.stack([circle, square, triangle]).to(torch.uint8) * 255
        pos = torch.arange(canvas - s + 1)
        shape, y, x = (t.reshape(-1) for t in torch.meshgrid(torch.arange(3), pos, pos, indexing="ij"))
        out = torch.zeros(len(shape), canvas, canvas, dtype=torch.uint8)
        r = torch.arange(s)
        # One scatter per size: sample n gets its mask at rows y[n]+r, columns x[n]+r.
        out[torch.arange(len(shape))[:, None, None], (y[:, None] + r)[:, :, None], (x[:, None] + r)[:, None, :]] = \
            masks[shape]
        images.append(out.unsqueeze(1))
        factors.append(torch.stack([shape, torch.full_like(shape, s), x, y], dim=1).float())
    return torch.cat(images), torch.cat(factors)


@DATASETS.register("shapes", shape=(1, 28, 28), factors=True)
def shapes(cfg: DatasetConfig) -> Source:
    """Generated shapes (circle/square/triangle, sizes 7..14, every position on 28x28): 8340 images, no download."""
    images, factors = make_shapes()
    order = torch.randperm(len(images), generator=_generator(cfg.seed, "shapes"))
    n_test = len(images) // 6

    def split(index: torch.Tensor) -> Split:
        index = index.sort().values
        return Split(images[index], factors[index, 0].long(), factors[index])

    return Source(split(order[n_test:]), split(order[:n_test]), SHAPE_NAMES, flip_ok=True,
                  factor_names=SHAPE_FACTORS)


# ------------------------------------------------------------------------------------------------------------
# FreyFace (the beta-VAE study 003): one MATLAB file, no labels. Kept in its own functions: prepare (find, fetch,
# verify) and read, like the torchvision-backed loaders above.

FREY_FACE_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"  # the study's footnote 3 points at this page
FREY_FACE_FILE = "frey_rawface.mat"
FREY_FACE_DIR = "FreyFace"
# md5 of the upstream file as one public loader records it (it downloads FREY_FACE_URL with that checksum). Not
# verified here (no network): a download that does not match fails and names both digests; a file you put in
# place yourself is checked by its shape and type only (FREY_FACE_SHAPE, uint8).
FREY_FACE_MD5 = "5aeb024d42b8a6091f30e5eb18c8a48d"
FREY_FACE_SHAPE = (560, 1965)  # variable `ff`: one 20 x 28 face per column
FREY_FACE_HW = (28, 20)  # each column is 28 rows of 20 pixels, row-major: ff.T.reshape(-1, 28, 20)
FREY_FACE_TEST = 400  # the study: "1,565 examples for training and another 400 examples for testing"


def _fetch_url(url: str, dest: Path) -> None:
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out)


def _prepare_frey_face(cfg: DatasetConfig) -> Path:
    """The path of a readable ``root/FreyFace/frey_rawface.mat``: found there, or downloaded from FREY_FACE_URL
    (into a temporary directory, md5-checked, then moved into place) when ``cfg.download`` allows."""
    root = data_root(cfg)
    path = root / FREY_FACE_DIR / FREY_FACE_FILE
    with preparing(root, "frey_face"):  # the first wave of trials may all find it missing at once
        if not path.is_file():
            if not cfg.download:
                raise _not_found("frey_face", path)
            _download("frey_face", root, [path], lambda tmp: _fetch_url(FREY_FACE_URL, tmp / FREY_FACE_DIR /
                                                                        FREY_FACE_FILE), {path: FREY_FACE_MD5})
    return path


def read_frey_face(path: Path) -> torch.Tensor:
    """uint8 images ``(1965, 1, 28, 20)`` from a ``frey_rawface.mat`` (MATLAB v5, variable ``ff``, 560 x 1965).

    Column j of ``ff`` is image j, its 560 values 28 rows of 20 pixels in row-major order: the layout every
    public loader reads (``ff.T.reshape(-1, 28, 20)``), which shows an upright face. Raises DataError naming the
    file for anything else.
    """
    import scipy.io

    try:
        ff = scipy.io.loadmat(str(path))["ff"]
    except Exception as err:
        raise DataError(f"{path}: not a MATLAB file with a variable ff ({type(err).__name__}: {err})") from None
    if ff.dtype != "uint8" or ff.shape != FREY_FACE_SHAPE:
        raise DataError(f"{path}: ff is {ff.dtype} {ff.shape}, expected uint8 {FREY_FACE_SHAPE}")
    return torch.from_numpy(ff.T.reshape(-1, 1, *FREY_FACE_HW).copy())


@DATASETS.register("frey_face", shape=(1, 28, 20), labelled=False)
def frey_face(cfg: DatasetConfig) -> Source:
    """FreyFace: 1965 grey 20x28 frames of one face (1565 train / 400 test, seeded), no labels, frey_rawface.mat.

    The study splits 1,565 / 400 without saying how; here the 400 test frames are a seeded random draw
    (``dataset.seed``), as for ``shapes``. Frames of one video: neighbours are near-duplicates, so a random
    split is an easier test than a contiguous one would be. No labels: ``class_names`` is empty and every label
    is -1; evaluation skips probes and clustering with a note.
    """
    images = read_frey_face(_prepare_frey_face(cfg))
    order = torch.randperm(len(images), generator=_generator(cfg.seed, "frey_face"))

    def split(index: torch.Tensor) -> Split:
        index = index.sort().values
        return Split(images[index], torch.full((len(index),), -1, dtype=torch.int64))

    return Source(split(order[FREY_FACE_TEST:]), split(order[:FREY_FACE_TEST]), (), flip_ok=True)


# ------------------------------------------------------------------------------------------------------------
# dSprites (Matthey et al. 2017, github.com/deepmind/dsprites-dataset): 737,280 binary 64x64 sprites, one image per
# combination of its latents: color (1) x shape (3) x scale (6) x orientation (40) x posX (32) x posY (32). One npz.

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = "https://github.com/deepmind/dsprites-dataset"
# Searched under the data root, in order: aesweep's folder, a git clone of the upstream repository, the root itself.
DSPRITES_DIRS = ("dsprites", "dsprites-dataset", ".")
DSPRITES_LATENTS = ("color", "shape", "scale", "orientation", "posX", "posY")  # the columns of latents_*
DSPRITES_FACTORS = DSPRITES_LATENTS[1:]  # color is 1 (white) in every image: no factor of variation
DSPRITES_SHAPES = ("square", "ellipse", "heart")  # shape values 1, 2, 3
DSPRITES_HW = (64, 64)
# Upstream has no split (disentanglement_lib samples from all images); a seeded tenth is the test split.
DSPRITES_TEST_FRACTION = 0.1
# The imgs member is deflate-compressed in the upstream npz, so np.load cannot memory-map it; it is read this many
# images (8 MB) at a time and only the rows of the subset are kept.
DSPRITES_CHUNK_ROWS = 2048


def _find_dsprites(cfg: DatasetConfig) -> Path:
    root = data_root(cfg)
    candidates = [root / d / DSPRITES_FILE for d in DSPRITES_DIRS]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        # No download: upstream publishes no checksum to verify one against (FreyFace has a recorded md5).
        raise DataError(f"dsprites: {candidates[0]} not found; download {DSPRITES_FILE} from {DSPRITES_URL} "
                        "and put it there, or set dataset.root / AESWEEP_DATA")
    return found


def _npz_rows(path: Path, key: str, targets: list[np.ndarray], row_shape: tuple[int, ...],
              dtype: np.dtype) -> list[np.ndarray]:
    """``array[rows]`` for each sorted index array of ``targets`` from member ``key`` of the npz at ``path``, read
    in one sequential pass of DSPRITES_CHUNK_ROWS rows: memory is the outputs plus one chunk, whatever the array's
    size and whether the member is compressed. The member must hold a C-order ``(N, *row_shape)`` ``dtype`` array."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, stored = read_header(f)
            if tuple(shape[1:]) != row_shape or stored != dtype or fortran:
                raise DataError(f"{path}: {key} is {stored} {shape}{' (Fortran order)' if fortran else ''}, "
                                f"expected {np.dtype(dtype)} (N, {', '.join(map(str, row_shape))})")
            outs = [np.empty((len(rows), *row_shape), dtype) for rows in targets]
            row_bytes = int(np.prod(row_shape)) * np.dtype(dtype).itemsize
            buffer = np.empty((min(DSPRITES_CHUNK_ROWS, shape[0]), *row_shape), dtype)
            for start in range(0, shape[0], DSPRITES_CHUNK_ROWS):
                count = min(DSPRITES_CHUNK_ROWS, shape[0] - start)
                chunk = buffer[:count]
                view, got = memoryview(chunk.reshape(-1).view(np.uint8)), 0
                while got < len(view):  # 1 MB reads: one large read() would hold the chunk twice over
                    piece = f.read(min(1 << 20, len(view) - got))
                    if not piece:
                        raise DataError(f"{path}: {key} ends after {start * row_bytes + got} bytes of data, "
                                        f"its header says {shape}: the file is truncated")
                    view[got:got + len(piece)] = piece
                    got += len(piece)
                for rows, out in zip(targets, outs, strict=True):
                    lo, hi = np.searchsorted(rows, [start, start + count])
                    out[lo:hi] = chunk[rows[lo:hi] - start]
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not an npz with a {key} array ({type(err).__name__}: {err})") from None
    return outs


@DATASETS.register("dsprites", shape=(1, 64, 64), factors=True)
def dsprites(cfg: DatasetConfig) -> Source:
    """dSprites: 737,280 binary 64x64 sprites (square, ellipse, heart) on a full grid of 5 factors, from the npz.

    File: ``root/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (or ``root/dsprites-dataset/``, a clone
    of the upstream repository, or ``root/``), never downloaded: upstream publishes no checksum. Keys: ``imgs``
    (N, 64, 64) uint8 in {0, 1}, ``latents_values`` (N, 6) float64, ``latents_classes`` (N, 6) int64 (columns
    ``DSPRITES_LATENTS``); ``metadata`` (a pickle) is never read. Any N is accepted (tests write small files).

    Images: uint8 (N, 1, 64, 64) in {0, 255}. Labels: the shape class (0 square, 1 ellipse, 2 heart). Factors:
    ``latents_values`` of shape (1..3), scale (0.5..1), orientation (radians, 0..2 pi), posX and posY (0..1), the
    constant color dropped. Square and ellipse look the same under some rotations (4- and 2-fold symmetry), so
    their orientation is not fully recoverable from the image, as in every use of dSprites.

    Split: a seeded tenth (``dataset.seed``) is the test split. Memory: the subsets are taken here, before any image
    is decoded (``train_size`` / ``test_size`` rows, prefixes of seeded permutations of each split, so a larger
    train_size only adds rows); imgs is streamed in chunks (``_npz_rows``), so a subset of 10,000 images costs
    about 40 MB however large the file. All of it is 2.7 GB (train) + 0.3 GB (test) as uint8.
    """
    path = _find_dsprites(cfg)
    try:
        with np.load(path, allow_pickle=False) as npz:
            values, classes = npz["latents_values"], npz["latents_classes"]
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not the dSprites npz ({type(err).__name__}: {err})") from None
    n = len(classes)
    if values.shape != (n, 6) or classes.shape != (n, 6) or n == 0:
        raise DataError(f"{path}: latents_values {values.shape} and latents_classes {classes.shape}, expected "
                        "(N, 6) each")
    order = torch.randperm(n, generator=_generator(cfg.seed, "dsprites")).numpy()
    n_test = max(1, round(n * DSPRITES_TEST_FRACTION))
    # A prefix of each split's own seeded permutation; load_dataset then takes all of it (its size is the subset's).
    test_rows = np.sort(order[:n_test][:cfg.test_size])
    train_rows = np.sort(order[n_test:][:cfg.train_size])
    train_images, test_images = _npz_rows(path, "imgs", [train_rows, test_rows], DSPRITES_HW, np.dtype(np.uint8))
    splits = []
    for rows, images in ((train_rows, train_images), (test_rows, test_images)):
        if images.size and images.max() > 1:
            raise DataError(f"{path}: imgs holds values above 1; the upstream file is binary (0 and 1)")
        np.multiply(images, 255, out=images)
        splits.append(Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(classes[rows, 1].astype(np.int64)),
                            torch.from_numpy(values[rows, 1:].astype(np.float32))))
    return Source(splits[0], splits[1], DSPRITES_SHAPES, flip_ok=False, factor_names=DSPRITES_FACTORS)
