"""Feature extractors for sample quality: pixels, torchvision's Inception through its weights API and hub cache (on a
stand-in state dict: nothing can be downloaded here), and the cached classifier (trained once, loaded after, one
file when two processes race for it)."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from aesweep.data.datasets import Dataset, Split
from aesweep.evaluation import sample_features as sf
from aesweep.spec.trial import TrialConfig


def tiny_split(n: int = 96, seed: int = 0) -> Split:
    """Random 1 x 12 x 12 images in 3 classes, the class shifting the brightness (so there is something to learn)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = (torch.rand(n, 1, 12, 12, generator=gen) * 120 + labels.view(-1, 1, 1, 1) * 60).to(torch.uint8)
    return Split(images, labels)


def test_pixels_are_the_flattened_images_in_unit_range():
    split = tiny_split(5)
    extractor = sf.pixels(None, None, torch.device("cpu"))
    got = extractor.features(split.images)
    assert extractor.name == "pixels" and got.shape == (5, 144) and got.dtype == torch.float32
    torch.testing.assert_close(got, split.images.flatten(1).float() / 255)
    torch.testing.assert_close(extractor.features(split.images.float() / 255), got)  # float input in [0, 1]


# --------------------------------------------------------------------------------------------------------------
# inception


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache ($TORCH_HOME/hub) for the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub"


def test_missing_inception_weights_fail_with_one_line_naming_the_file(hub):
    path = sf.inception_weights_path()
    assert path == hub / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    with pytest.raises(sf.FeatureError) as err:
        sf.load_inception()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "is missing" in message
    assert "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth" in message


def test_inception_loads_from_the_hub_cache_and_gives_pool3_features(hub):
    from torchvision.models import inception_v3

    # A stand-in for the ImageNet weights: the same architecture, randomly initialised, saved where torchvision's
    # weights API looks. Loading then runs the real code path (weights API, hub cache, state dict).
    torch.manual_seed(0)
    stand_in = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    path = sf.inception_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(stand_in.state_dict(), path)

    extractor = sf.inception(None, None, torch.device("cpu"))
    assert extractor.name == "inception"
    images = tiny_split(1).images  # grey 12 x 12, uint8; one image: a forward pass at 299 x 299 is 6 GFLOP
    got = extractor.features(images)
    assert got.shape == (1, 2048) and torch.isfinite(got).all()

    # The same numbers by hand: repeat grey to RGB, resize to 299, ImageNet-normalise, the stand-in's own
    # transform_input (the weights API turns it on), the pool3 average before the classifier.
    x = torch.nn.functional.interpolate(images.float().div(255).expand(-1, 3, -1, -1), size=(299, 299),
                                        mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    stand_in.transform_input, stand_in.fc = True, torch.nn.Identity()
    with torch.inference_mode():
        expected = stand_in(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# classifier


def test_the_classifier_is_trained_once_then_loaded_from_the_cache(tmp_path):
    split = tiny_split()
    first = sf.cached_classifier(split, "tiny", 3, tmp_path, epochs=2)
    assert first.trained and first.path.parent == tmp_path and first.path.is_file()
    assert first.path.name == f"tiny_cnn-v{sf.CLASSIFIER_VERSION}-e2-s0-{sf.split_digest(split)}.pt"
    assert first.meta["train_acc"] > 1 / 3  # it learned something: the class sets the brightness
    stamp = first.path.stat().st_mtime_ns
    second = sf.cached_classifier(split, "tiny", 3, tmp_path, epochs=2)
    assert not second.trained and first.path.stat().st_mtime_ns == stamp
    x = split.images[:8].float() / 255
    with torch.inference_mode():
        torch.testing.assert_close(second.net.features(x), first.net.features(x), atol=0, rtol=0)
        assert second.net.features(x).shape == (8, sf.CLASSIFIER_FEATURES)
    # Another train split (one image changed) is another extractor, in its own file.
    other = Split(split.images.clone(), split.labels)
    other.images[0, 0, 0, 0] ^= 1
    assert sf.cached_classifier(other, "tiny", 3, tmp_path, epochs=2).path != first.path
    assert not list(tmp_path.glob("*.tmp"))


def test_training_is_seeded_and_leaves_the_callers_random_state_alone():
    state = torch.random.get_rng_state()
    a, _ = sf.train_classifier(tiny_split(), 3, "cpu", epochs=1, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, _ = sf.train_classifier(tiny_split(), 3, "cpu", epochs=1, seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def _classifier_in_child(cache_dir: str, barrier, results) -> None:
    barrier.wait()  # both children ask for the classifier at the same moment
    got = sf.cached_classifier(tiny_split(), "tiny", 3, cache_dir, epochs=1)
    results.put((got.trained, str(got.path), hashlib.sha256(got.path.read_bytes()).hexdigest()))


def test_two_processes_started_together_share_one_cached_file(tmp_path):
    ctx = mp.get_context("spawn")  # torch in a forked child of a threaded parent can deadlock
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_classifier_in_child, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for child in children:
        child.start()
    got = [results.get(timeout=240) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert sorted(trained for trained, _, _ in got) == [False, True]  # one trained, the other waited and loaded
    assert len({(path, digest) for _, path, digest in got}) == 1
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == [Path(got[0][1]).name]  # no partial or temporary file left behind


def test_the_registered_classifier_is_named_after_its_dataset_and_cached_under_the_data_root(tmp_path,
                                                                                             monkeypatch):
    # The extractor trains on the dataset's whole upstream train split; a tiny one stands in for shapes here.
    split = tiny_split()
    full = Dataset("shapes", split, split[:0], split, ("a", "b", "c"), flip_ok=True)
    asked = []
    monkeypatch.setattr(sf, "load_dataset", lambda cfg: asked.append(cfg) or full)
    cfg = TrialConfig.model_validate({"dataset": {"name": "shapes", "root": str(tmp_path), "train_size": 100,
                                                  "folds": 5, "fold": 2},
                                      "eval": {"sample_quality": {"features": "classifier"}}})
    extractor = sf.extractor_for(cfg, full, "cpu")
    assert extractor.name == "shapes_cnn"
    assert extractor.features(split.images[:4]).shape == (4, sf.CLASSIFIER_FEATURES)
    assert [(c.train_size, c.val_fraction, c.folds) for c in asked] == [(None, 0.0, None)]
    assert len(list((tmp_path / "features").glob("shapes_cnn-*.pt"))) == 1
    # Another trial of the sweep (another subset, fold and seed) in this process reuses the built extractor.
    other = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"train_size": 50, "fold": 1})})
    assert sf.extractor_for(other, full, "cpu") is extractor and len(asked) == 1
