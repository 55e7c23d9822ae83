"""Feature extractors for sample quality (sample_quality.py): images -> the vectors that real and generated images
are compared in.

An extractor is registered in ``SAMPLE_FEATURES`` as a factory ``(cfg: TrialConfig, dataset: Dataset, device) ->
Extractor``. Its ``Extractor.name`` goes into every metric key (``gen/<name>/<measure>``), so that a FID in one
feature space is never read as another's:

- ``pixels`` (name ``pixels``): the flattened pixels in [0, 1], C*H*W values. Cheap; for tests and tiny images.
- ``inception`` (name ``inception``): torchvision's ``inception_v3`` with ``Inception_V3_Weights.IMAGENET1K_V1``,
  the 2048 pool3 values (the average pool before the classifier). Images: grey repeated to 3 channels, resized
  to 299 x 299 (bilinear, antialiased), normalised with the weights' ImageNet mean and std (the network's
  ``transform_input`` then maps them to the [-1, 1] input the ported weights expect). The weights come from torch's
  hub cache (``$TORCH_HOME/hub/checkpoints``) through torchvision's weights API; nothing is downloaded here, and a
  missing file fails with one line naming it (``FeatureError``). These are torchvision's ImageNet weights, not the
  TF-Inception weights that pytorch-fid and published FIDs use: the values are comparable with one another only.
- ``classifier`` (name ``<dataset>_cnn``, e.g. ``fashion_mnist_cnn``): the 128 values of the penultimate layer of a
  small CNN classifier (``SmallCNN``) trained once per dataset, seeded, on the dataset's whole upstream train
  split (not the trial's subset: every trial of a sweep over train_size, folds or val_fraction shares one
  extractor, so their FIDs are comparable). Cached under the data root (``<root>/features/``), keyed by the
  dataset's name, the digest of that train split and ``CLASSIFIER_VERSION``; written under a file lock to a
  temporary file renamed into place, so concurrent Ray workers train it once and never read a partial file.
  Needs labels (validation rejects it on a dataset without them).

Each process keeps the extractors it built (``extractor_for``): a worker reuses a loaded Inception or classifier
across trials, as it reuses its dataset.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aesweep.data.batches import to_float
from aesweep.data.datasets import Dataset, Split, data_root, load_dataset
from aesweep.data.files import preparing
from aesweep.registry import SAMPLE_FEATURES

if TYPE_CHECKING:
    from aesweep.spec.trial import DatasetConfig, TrialConfig

__all__ = ["CLASSIFIER_VERSION", "CachedClassifier", "Extractor", "FeatureError", "SmallCNN", "cached_classifier",
           "extractor_for", "inception_input", "inception_weights_path", "load_inception", "split_digest",
           "train_classifier"]

# Bump on any change to SmallCNN or to its training: the cache key holds it, so an old file is never reused.
CLASSIFIER_VERSION = 1
# A few seeded epochs: the extractor must separate the classes, not win a benchmark (Fashion-MNIST: ~90%).
CLASSIFIER_EPOCHS = 3
CLASSIFIER_BATCH = 128
CLASSIFIER_LR = 2e-3
CLASSIFIER_FEATURES = 128
INCEPTION_SIZE = 299
# Images per forward pass. Inception's largest maps are 147 x 147 x 64 floats (5.5 MB) per image, so a batch of 64
# peaks near 1 GB, which a fractional GPU share holds; the other extractors are small.
INCEPTION_BATCH = 64
BATCH = 512


class FeatureError(RuntimeError):
    """A feature extractor cannot be built (missing weights, no labels, an unreadable cache file); one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Extractor:
    """``net``: float images (B, C, H, W) in [0, 1] on ``device`` -> features (B, F); ``name``: the metric-key
    suffix; ``batch_size``: images per forward pass."""

    name: str
    net: Callable[[Tensor], Tensor]
    device: torch.device
    batch_size: int = BATCH

    def features(self, images: Tensor) -> Tensor:
        """Features (N, F) float32 on ``device`` of ``images`` (N, C, H, W): uint8 0..255 or float in [0, 1], on
        any device; batched, under inference mode."""
        parts = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = images[i:i + self.batch_size].to(self.device)
                batch = to_float(batch) if batch.dtype == torch.uint8 else batch.float()
                parts.append(self.net(batch).flatten(1).float())
        return torch.cat(parts)


_BUILT: dict[tuple, Extractor] = {}


def extractor_for(cfg: TrialConfig, dataset: Dataset, device: torch.device | str) -> Extractor:
    """The extractor ``cfg.eval.sample_quality.features`` names, on ``device``; built once per process for the
    same dataset config and device (the classifier's key ignores the trial's subset, see ``_upstream``)."""
    name = cfg.eval.sample_quality.features
    device = torch.device(device)
    key = (name, _upstream(cfg.dataset).model_dump_json(), str(device), torch.hub.get_dir())
    if key not in _BUILT:
        _BUILT[key] = SAMPLE_FEATURES.get(name)(cfg, dataset, device)
    return _BUILT[key]


# --------------------------------------------------------------------------------------------------------------
# pixels


@SAMPLE_FEATURES.register("pixels", needs_labels=False)
def pixels(cfg: TrialConfig, dataset: Dataset, device: torch.device) -> Extractor:
    """the flattened pixels in [0, 1] (C*H*W values; cheap, for tests and tiny images)"""
    return Extractor("pixels", lambda x: x.flatten(1), device, BATCH)


# --------------------------------------------------------------------------------------------------------------
# inception


def inception_weights_path() -> Path:
    """Where torchvision's weights API finds ``Inception_V3_Weights.IMAGENET1K_V1``: torch's hub cache,
    ``torch.hub.get_dir()/checkpoints/<the URL's file name>`` ($TORCH_HOME/hub, default ~/.cache/torch/hub)."""
    # torchvision.models costs a worker ~1.5 s to import (datasets.py defers it too); only inception needs it.
    from torchvision.models import Inception_V3_Weights

    url = Inception_V3_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name


def load_inception(device: torch.device | str = "cpu") -> nn.Module:
    """torchvision's Inception-v3 with its IMAGENET1K_V1 weights, its classifier replaced by the identity: input
    ``inception_input(x)``, output the 2048 pool3 values. Eval mode, on ``device``.

    Loads through torchvision's weights API, which reads torch's hub cache; it is never asked to download (these
    machines may have no network): a missing file raises FeatureError naming it and where it comes from.
    """
    from torchvision.models import Inception_V3_Weights, inception_v3

    weights = Inception_V3_Weights.IMAGENET1K_V1
    path = inception_weights_path()
    if not path.is_file():
        raise FeatureError(f"inception features need torchvision's Inception_V3_Weights.IMAGENET1K_V1 weights: "
                           f"{path} is missing; download {weights.url} and put it there (the hub cache is "
                           "$TORCH_HOME/hub), or use eval.sample_quality.features: classifier")
    # With weights, torchvision insists on building the auxiliary classifier (aux_logits=False is refused): drop it
    # after loading, and the final classifier, so the forward pass ends at pool3.
    net = inception_v3(weights=weights, progress=False)
    net.aux_logits, net.AuxLogits, net.fc = False, None, nn.Identity()
    return net.eval().to(device)


def inception_input(x: Tensor) -> Tensor:
    """Float images (B, C, H, W) in [0, 1], C = 1 or 3 -> (B, 3, 299, 299), normalised as the weights expect."""
    from torchvision.models import Inception_V3_Weights

    transform = Inception_V3_Weights.IMAGENET1K_V1.transforms()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False,
                      antialias=True)
    mean = torch.tensor(transform.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(transform.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@SAMPLE_FEATURES.register("inception", needs_labels=False)
def inception(cfg: TrialConfig, dataset: Dataset, device: torch.device) -> Extractor:
    """torchvision's ImageNet Inception-v3 pool3 (2048 values; weights from torch's hub cache, never downloaded)"""
    net = load_inception(device)
    return Extractor("inception", lambda x: net(inception_input(x)), device, INCEPTION_BATCH)


# --------------------------------------------------------------------------------------------------------------
# classifier


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (32, 64 channels; ReLU, 2x2 max pool), a 4x4 adaptive average pool, a hidden Linear of
    ``CLASSIFIER_FEATURES`` units (ReLU) and the class logits. Input (B, C, H, W) in [0, 1], any H, W >= 4."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, CLASSIFIER_FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(CLASSIFIER_FEATURES, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer, (B, CLASSIFIER_FEATURES)."""
        return self.body(x - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass
class CachedClassifier:
    """A trained SmallCNN (eval mode), the file it is cached in, whether this call trained it (False: loaded), and
    the facts stored beside its weights (dataset, digest, version, epochs, seed, train_acc, ...)."""

    net: SmallCNN
    path: Path
    trained: bool
    meta: dict[str, Any] = field(default_factory=dict)


def split_digest(split: Split) -> str:
    """blake2b (32 hex digits) of a split's image shape, images and labels: the cache key of what a classifier
    was trained on."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(split.images.shape)).encode())
    digest.update(split.images.cpu().contiguous().numpy())
    digest.update(split.labels.cpu().contiguous().numpy())
    return digest.hexdigest()


def train_classifier(train: Split, num_classes: int, device: torch.device | str, epochs: int = CLASSIFIER_EPOCHS,
                     seed: int = 0) -> tuple[SmallCNN, float]:
    """A SmallCNN trained on ``train`` (uint8 images, labels 0..num_classes-1) with Adam, cross-entropy, batches
    of CLASSIFIER_BATCH in a seeded order; returns (net in eval mode, accuracy on the train batches of the last
    epoch). The caller's random state is left as it was."""
    device = torch.device(device)
    if len(train) == 0 or int(train.labels.min()) < 0:
        raise FeatureError("the classifier extractor needs a labelled train split")
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)  # the initial weights
        net = SmallCNN(train.images.shape[1], num_classes).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=CLASSIFIER_LR)
        images, labels = train.images.to(device), train.labels.to(device)
        order_gen = torch.Generator().manual_seed(seed)
        hits = 0
        for _ in range(epochs):
            hits = 0
            order = torch.randperm(len(images), generator=order_gen).to(device)
            for i in range(0, len(order), CLASSIFIER_BATCH):
                rows = order[i:i + CLASSIFIER_BATCH]
                logits = net(to_float(images[rows]))
                loss = F.cross_entropy(logits, labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                hits += int((logits.argmax(1) == labels[rows]).sum())
    return net.eval(), hits / len(images)


def _load_classifier(path: Path, device: torch.device) -> CachedClassifier:
    try:
        stored = torch.load(path, map_location=device, weights_only=True)
        net = SmallCNN(stored["meta"]["channels"], stored["meta"]["num_classes"])
        net.load_state_dict(stored["state"])
    except Exception as err:
        raise FeatureError(f"{path}: unreadable cached classifier ({type(err).__name__}: {err}); delete it to "
                           "train it again") from None
    return CachedClassifier(net.to(device).eval(), path, False, dict(stored["meta"]))


def cached_classifier(train: Split, dataset_name: str, num_classes: int, cache_dir: str | Path,
                      device: torch.device | str = "cpu", epochs: int = CLASSIFIER_EPOCHS,
                      seed: int = 0) -> CachedClassifier:
    """The SmallCNN for ``train``, loaded from ``cache_dir`` or trained (``train_classifier``) and written there.

    The file: ``<dataset_name>_cnn-v<CLASSIFIER_VERSION>-e<epochs>-s<seed>-<split_digest>.pt``. Training happens
    under an inter-process lock on that name (``data.files.preparing``), after a second look for the file, so of
    processes that start together one trains and the others wait and load its file; the file is written to a
    temporary name in ``cache_dir`` and renamed into place (``os.replace``), so no reader sees a partial file.
    """
    device = torch.device(device)
    cache_dir = Path(cache_dir)
    digest = split_digest(train)
    path = cache_dir / f"{dataset_name}_cnn-v{CLASSIFIER_VERSION}-e{epochs}-s{seed}-{digest}.pt"
    if path.is_file():
        return _load_classifier(path, device)
    with preparing(cache_dir, path.stem):
        if path.is_file():  # another process trained it while this one waited for the lock
            return _load_classifier(path, device)
        net, train_acc = train_classifier(train, num_classes, device, epochs, seed)
        meta = {"dataset": dataset_name, "digest": digest, "version": CLASSIFIER_VERSION,
                "epochs": epochs, "seed": seed, "train_acc": train_acc, "train_images": len(train),
                "channels": int(train.images.shape[1]), "num_classes": num_classes}
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"state": state, "meta": meta}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return CachedClassifier(net, path, True, meta)


def _upstream(cfg: DatasetConfig) -> DatasetConfig:
    """The dataset config of the whole upstream train split: no subset, no validation carve, no folds."""
    return cfg.model_copy(update={"train_size": None, "test_size": None, "val_fraction": 0.0, "folds": None,
                                  "fold": 0})


@SAMPLE_FEATURES.register("classifier", needs_labels=True)
def classifier(cfg: TrialConfig, dataset: Dataset, device: torch.device) -> Extractor:
    """penultimate layer of a small CNN trained once per dataset on its train split, cached under the data root"""
    full = load_dataset(_upstream(cfg.dataset))
    if not full.num_classes:
        raise FeatureError(f"the classifier extractor needs labels; dataset {cfg.dataset.name} has none")
    got = cached_classifier(full.train, cfg.dataset.name, full.num_classes, data_root(cfg.dataset) / "features",
                            device, seed=0)
    return Extractor(f"{cfg.dataset.name}_cnn", got.net.features, device, BATCH)
