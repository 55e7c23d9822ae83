"""Every figure is written as a valid, non-blank PNG for a tiny model, grey and RGB."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from aesweep import figures
from aesweep.data import Dataset, Split, load_dataset
from aesweep.model import AutoEncoder
from aesweep.spec import DatasetConfig, EvalConfig, TrialConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shapes():
    return load_dataset(DatasetConfig(name="shapes", train_size=300, test_size=120, val_fraction=0.1))


def tiny(in_shape=(1, 28, 28), bottleneck: str = "deterministic") -> AutoEncoder:
    torch.manual_seed(0)
    return AutoEncoder("conv", in_shape, 4, width=0.125, bottleneck=bottleneck)


def assert_readable_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    pixels = mpimg.imread(path)[..., :3]  # floats in [0, 1], alpha dropped
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, path
    # Not blank: a visible share of the canvas is not background white, and the pixels vary.
    assert (pixels.min(-1) < 0.9).mean() > 0.02, path
    assert pixels.std() > 0.05, path


def test_every_figure_is_a_readable_png(shapes, tmp_path):
    model = tiny()
    model.train()
    names = list(figures.FIGURES)
    # The spec's list of figure names and the registry of figure functions are the same set.
    assert set(names) == set(EvalConfig.model_fields["figures"].annotation.__args__[0].__args__)
    paths = figures.make_figures(model, shapes, names, tmp_path / "figs", "ae | shapes | latent 4", tsne_points=80)
    assert paths == [tmp_path / "figs" / f"{n}.png" for n in names]
    for path in paths:
        assert_readable_png(path)
    assert model.training  # the caller's mode is restored


def test_figures_for_a_gaussian_model_and_rgb_images(tmp_path):
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=g))

    rgb = Dataset("random", split(40), split(10), split(30), tuple(f"class {i}" for i in range(10)), True)
    model = tiny((3, 32, 32), "gaussian")
    names = ["reconstructions", "interpolation", "traversals", "prior_samples", "latent_pca"]
    for path in figures.make_figures(model, rgb, names, tmp_path, "vae | random | latent 4"):
        assert_readable_png(path)


def test_unknown_figure_names_fail_before_any_work(shapes, tmp_path):
    with pytest.raises(ValueError, match="known: reconstructions"):
        figures.make_figures(tiny(), shapes, ["reconstructions", "umap"], tmp_path / "none", "t")
    assert not (tmp_path / "none").exists()


def test_figure_title_names_variant_dataset_and_latent_size():
    trial = TrialConfig.model_validate({"dataset": {"name": "shapes"}, "model": {"latent_dim": 8},
                                        "objective": {"variant": "vae", "beta": 4.0}})
    title = figures.figure_title(trial)
    assert title.startswith("vae") and "beta=4" in title and "shapes" in title and "latent 8" in title
    assert figures.figure_title(TrialConfig()).endswith("| latent 32")


def test_traversals_follow_the_factor_correlated_dimensions(shapes, tmp_path):
    ctx = figures._Context(tiny(), shapes, "t", None, 0, 50, 5000)
    dims = figures._traversed_dims(ctx)
    assert 1 <= len(dims) <= figures.MAX_TRAVERSED_DIMS
    assert len({d for d, _ in dims}) == len(dims)
    labelled = " ".join(label for _, label in dims)
    assert all(name in labelled for name in shapes.factor_names)
    assert np.all(np.array([d for d, _ in dims]) < 4)
