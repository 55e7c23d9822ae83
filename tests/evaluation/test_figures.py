"""Every figure is written as a valid, non-blank PNG for a tiny model, grey and RGB."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from aesweep import registry
from aesweep.data.datasets import Dataset, Split, load_dataset
from aesweep.evaluation import figures
from aesweep.models.model import AutoEncoder
from aesweep.spec.trial import DatasetConfig, EvalConfig, TrialConfig

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


HISTORY = [{"epoch": float(e), "train/loss": 0.1 / e, "val/loss": 0.12 / e + 0.002 * e} for e in range(1, 9)]
TWO_D_ONLY = {"latent_2d", "decoded_grid"}


def test_every_figure_is_a_readable_png(shapes, tmp_path):
    model = tiny()
    model.train()
    names = list(figures.FIGURES)
    # The spec's list of figure names and the registry of figure functions are the same set, listed by
    # `aesweep list` with a line each.
    assert set(names) == set(EvalConfig.model_fields["figures"].annotation.__args__[0].__args__)
    assert set(names) == set(registry.FIGURES.names()) and all(registry.FIGURES.doc(n) for n in names)
    paths = figures.make_figures(model, shapes, names, tmp_path / "figs", "ae | shapes | latent 4", tsne_points=80,
                                 history=HISTORY)
    # A latent of 4: the two 2-D figures do not apply; every other figure is drawn, in the order asked.
    assert paths == [tmp_path / "figs" / f"{n}.png" for n in names if n not in TWO_D_ONLY]
    for path in paths:
        assert_readable_png(path)
    assert model.training  # the caller's mode is restored


def test_two_dimensional_latent_figures(shapes, tmp_path):
    torch.manual_seed(0)
    model = AutoEncoder("mlp", (1, 28, 28), 2, width=0.125, bottleneck="gaussian")
    names = ["latent_2d", "decoded_grid", "latent_histograms", "latent_by_class", "factor_correlation",
             "loss_curves"]
    paths = figures.make_figures(model, shapes, names, tmp_path, "vae | shapes | latent 2", history=HISTORY)
    assert [p.name for p in paths] == [f"{n}.png" for n in names]
    for path in paths:
        assert_readable_png(path)
    # The raw scatter shows the codes themselves (no PCA): its axes span the embeddings' own range.
    ctx = figures._Context(model, shapes, "t", None, 0, 50, 5000)
    fig = figures.latent_2d(ctx)
    lo, hi = fig.axes[0].get_xlim()
    assert lo <= float(ctx.codes[:, 0].min()) and hi >= float(ctx.codes[:, 0].max())
    # The decoded grid is the decoder at 10 x 10 points of [-3, 3]^2, top-left z = (-3, 3).
    grid = figures.decoded_grid(ctx)
    mosaic = grid.axes[0].images[0].get_array()
    assert mosaic.shape == (280, 280)
    corner = figures.gen.decode(model, torch.tensor([[-3.0, 3.0]]))[0, 0].numpy()
    np.testing.assert_allclose(mosaic[:28, :28], corner, atol=1e-6)


def test_figures_that_do_not_apply_are_skipped_with_a_note(shapes, tmp_path, caplog):
    # No labels (one class), no factors, a latent of 4, and no training history.
    unlabelled = Dataset("faces", Split(shapes.train.images, torch.zeros(len(shapes.train), dtype=torch.long)),
                         Split(shapes.val.images, torch.zeros(len(shapes.val), dtype=torch.long)),
                         Split(shapes.test.images, torch.zeros(len(shapes.test), dtype=torch.long)),
                         ("face",), False)
    names = ["latent_2d", "decoded_grid", "latent_by_class", "factor_correlation", "loss_curves",
             "latent_histograms", "latent_pca"]
    with caplog.at_level("WARNING", logger="aesweep.figures"):
        paths = figures.make_figures(tiny(), unlabelled, names, tmp_path, "ae | faces | latent 4")
    assert [p.name for p in paths] == ["latent_histograms.png", "latent_pca.png"]
    for path in paths:
        assert_readable_png(path)  # an unlabelled scatter is one colour, no legend
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 5 and all(len(n.splitlines()) == 1 for n in notes)
    assert "figure latent_2d skipped: latent_dim is 4, not 2" in notes
    assert any("latent_by_class skipped: the dataset has no class labels" in n for n in notes)
    assert any("factor_correlation skipped: the dataset has no generative factors" in n for n in notes)
    assert any(n.startswith("figure loss_curves skipped: no per-epoch history") for n in notes)
    assert not (tmp_path / "latent_2d.png").exists()


def test_a_trial_draws_its_loss_curves_and_keeps_them_across_a_resume(tmp_path):
    from aesweep.training import train

    cfg = TrialConfig.model_validate({
        "dataset": {"name": "shapes", "train_size": 200, "test_size": 60, "val_fraction": 0.2},
        "model": {"backbone": "mlp", "width": 0.125, "latent_dim": 2},
        "train": {"epochs": 2, "batch_size": 64, "early_stopping": {"patience": None}, "device": "cpu"},
        "eval": {"metrics": ["mse"], "probes": [], "clustering": [], "figures": ["loss_curves", "latent_2d"]}})
    first = train.run_trial(cfg, workdir=tmp_path / "a")
    assert first.status == "finished"
    assert {p.name for p in first.artifacts} >= {"loss_curves.png", "latent_2d.png"}
    assert_readable_png(tmp_path / "a" / "figures" / "loss_curves.png")
    assert [h["epoch"] for h in train.load_checkpoint(tmp_path / "a")["history"]] == [1.0, 2.0]
    # Resumed for a third epoch: the checkpoint's history carries the first two epochs on.
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})})
    resumed = train.run_trial(longer, checkpoint_dir=tmp_path / "a", workdir=tmp_path / "b")
    assert resumed.status == "finished" and len(resumed.history) == 1
    assert [h["epoch"] for h in train.load_checkpoint(tmp_path / "b")["history"]] == [1.0, 2.0, 3.0]


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


def test_zeroed_dims_decodes_each_code_with_one_dimension_at_zero(shapes, tmp_path):
    base = torch.arange(1.0, 13.0).view(3, 4)  # 3 codes of 4 dimensions, none zero
    codes = figures.zeroed_codes(base, [0, 2])
    assert codes.shape == (9, 4)
    assert torch.equal(codes[:3], base)  # block 0: the codes as they are
    for block, dim in ((1, 0), (2, 2)):
        rows = codes[3 * block:3 * (block + 1)]
        assert torch.all(rows[:, dim] == 0)
        assert torch.equal(torch.cat([rows[:, :dim], rows[:, dim + 1:]], 1),
                           torch.cat([base[:, :dim], base[:, dim + 1:]], 1))  # nothing else changed
    # The figure: inputs, reconstructions, and one row per dimension (tiny() has 4, all shown).
    ctx = figures._Context(tiny(), shapes, "t", None, 0, 50, 5000)
    fig = figures.zeroed_dims(ctx)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["input", "reconstruction", "z[0] = 0", "z[1] = 0", "z[2] = 0", "z[3] = 0"]
    assert len(fig.axes) == 6 * figures.ZEROED_IMAGES
    (path,) = figures.make_figures(tiny(), shapes, ["zeroed_dims"], tmp_path, "ae | shapes | latent 4")
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
