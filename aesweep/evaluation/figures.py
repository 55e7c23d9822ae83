"""Per-trial figures as PNG files: reconstructions, 2-D projections, interpolation, traversals, prior samples,
the raw 2-D latent and its decoded grid, latent histograms and per-class distributions, the factor correlation
heat-map and the loss curves.

``make_figures(model, dataset, names, out_dir, title)`` writes ``out_dir/<name>.png`` for each name of
``EvalConfig.figures``. Every figure carries ``title`` (``figure_title(cfg)``: variant, dataset, latent size) as
its first title line and says what it shows on the second. A figure that does not apply to the trial (a 2-D
figure for a latent of another size, a per-class one without labels, the factor heat-map without factors, loss
curves without a training history) raises ``FigureSkipped``: ``make_figures`` writes nothing for it and logs one
line (logger ``aesweep.figures``, level WARNING), it is not an error.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot: no global
backend switch, no figure manager to leak in a long-lived Ray worker, safe in threads. Everything is seeded, so
a trial's figures are reproducible. Speed: test images are embedded once (at most ``max_points``, seeded) and
shared by the projections and traversals; t-SNE runs on at most ``tsne_points`` of them after a PCA to 50
dimensions.

A figure is one decorated function ``(ctx) -> Figure`` in ``FIGURES`` (``registry.FIGURES``); adding one is adding
a function, in the order the spec lists them. matplotlib is imported on first drawing, not at import:
``registry.load_all`` imports this module to list the names.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from aesweep.data.batches import to_float
from aesweep.data.datasets import Dataset
from aesweep.evaluation import generative as gen
from aesweep.registry import FIGURES
from aesweep.spec import variants

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from aesweep.spec.trial import TrialConfig

__all__ = ["FIGURES", "FigureSkipped", "figure_title", "make_figures"]

log = logging.getLogger("aesweep.figures")


class FigureSkipped(Exception):
    """Raised by a figure that does not apply to this trial; the message says why, in one line."""

GRID_COLUMNS = 10  # reconstructions shown, and interpolation steps
TRAVERSAL_VALUES = np.linspace(-3, 3, 7)  # in prior standard deviations
MAX_TRAVERSED_DIMS = 5
PRIOR_GRID = 8  # 8 x 8 prior samples
DECODED_GRID = 10  # 10 x 10 decoded codes over [-GRID_RANGE, GRID_RANGE]^2 (the beta-VAE study's 100 images)
GRID_RANGE = 3.0
MAX_HIST_DIMS = 16  # latent histograms: panels
MAX_CLASS_DIMS = 10  # per-class distributions: panels (the AE-vs-VAE study's AE has 10 dimensions)
# t-SNE iterations: sklearn's minimum of 250 early-exaggeration steps plus 250 more. The layout of a few thousand
# points is settled by then, and it halves the time of the default 1000 (about 3 s for 2000 points, one thread).
TSNE_ITER = 500
DPI = 110


def figure_title(cfg: TrialConfig) -> str:
    """The title prefix of a trial's figures, e.g. ``vae (beta=4) | shapes | latent 8``."""

    # The resolved knobs (preset defaults filled in): a vae trial that leaves beta unset still shows beta=1.
    given = {k: getattr(cfg.objective, k) for k in variants.KNOBS}
    knobs = variants.compose(cfg.objective.variant, given).knobs
    shown = [f"{k}={v:g}" for k, v in knobs.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    variant = cfg.objective.variant + (f" ({', '.join(shown)})" if shown else "")
    return f"{variant} | {cfg.dataset.name} | latent {cfg.model.latent_dim}"


@dataclass
class _Context:
    """What every figure function reads; embeddings and the prior are computed on first use and shared."""

    model: nn.Module
    dataset: Dataset
    title: str
    prior: Any
    seed: int
    tsne_points: int
    max_points: int
    history: Sequence[Mapping[str, float]] = field(default_factory=list)  # per-epoch metrics, oldest first

    @cached_property
    def rows(self) -> Tensor:
        """Seeded subsample of test rows (CPU int64 indices) that the projections show."""
        return gen.subsample(len(self.dataset.test), self.max_points, self.seed)

    @cached_property
    def codes(self) -> Tensor:
        """Embeddings of ``rows``: (n, latent_dim) float32 on the CPU."""
        split = self.dataset.test[self.rows.to(self.dataset.test.device)]
        return gen.embed_split(self.model, split).cpu()

    @cached_property
    def labels(self) -> np.ndarray:
        return self.dataset.test.labels[self.rows.to(self.dataset.test.device)].cpu().numpy()

    @cached_property
    def latent_prior(self) -> gen.LatentPrior:
        return gen.resolve_prior(self.model, self.dataset, self.prior)

    @cached_property
    def order(self) -> Tensor:
        """A seeded permutation of the test split: which images the grids show."""
        return torch.randperm(len(self.dataset.test), generator=torch.Generator().manual_seed(self.seed))

    def images(self, index: Tensor) -> Tensor:
        """Test images at ``index`` (CPU indices) as float (n, C, H, W) in [0, 1] on the model's device."""
        device = next(self.model.parameters()).device
        return to_float(self.dataset.test.images[index.to(self.dataset.test.device)].to(device))

    def embed(self, x: Tensor) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return self.model.embed(x).float()
        finally:
            self.model.train(was_training)

    @property
    def labelled(self) -> bool:
        """Whether the dataset has classes to colour or group by (one class, or none, is no labels)."""
        return self.dataset.num_classes > 1

    def need_2d(self) -> None:
        if self.model.latent_dim != 2:
            raise FigureSkipped(f"latent_dim is {self.model.latent_dim}, not 2")

    def new_figure(self, width: float, height: float, what: str) -> Figure:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        fig.suptitle(f"{self.title}\n{what}", fontsize=11)
        return fig


def _show(ax: Axes, image: Tensor) -> None:
    """Draw one image (C, H, W) in [0, 1]: grey for one channel, RGB for three; no ticks, thin frame."""
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _one_per_class_first(ctx: _Context, k: int) -> Tensor:
    """k test indices: the first image of each class in the seeded order, then the next images in that order."""
    labels = ctx.dataset.test.labels.cpu()[ctx.order]
    firsts = [int(ctx.order[(labels == c).nonzero()[0, 0]]) for c in labels.unique().tolist()]
    rest = [int(i) for i in ctx.order if int(i) not in set(firsts)]
    return torch.tensor((firsts[:k] + rest)[:k], dtype=torch.long)


@FIGURES.register("reconstructions")
def reconstructions(ctx: _Context) -> Figure:
    """Test originals (top row) over their reconstructions (bottom row), one per class where possible."""
    index = _one_per_class_first(ctx, GRID_COLUMNS)
    x = ctx.images(index)
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        with torch.inference_mode():
            x_hat = ctx.model(x).x_hat.float()
    finally:
        ctx.model.train(was_training)
    n = len(index)
    fig = ctx.new_figure(1.1 * n + 0.8, 3.2, "test images (top) and their reconstructions (bottom)")
    axes = fig.subplots(2, n, squeeze=False)
    names = ctx.dataset.class_names
    labels = ctx.dataset.test.labels.cpu()[index].tolist()
    for j in range(n):
        _show(axes[0, j], x[j])
        _show(axes[1, j], x_hat[j])
        axes[0, j].set_title(names[labels[j]] if 0 <= labels[j] < len(names) else str(labels[j]), fontsize=8)
    axes[0, 0].set_ylabel("original", fontsize=9)
    axes[1, 0].set_ylabel("reconstruction", fontsize=9)
    return fig


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of x (N, D) on their first k principal components: ((N, k), explained variance ratio (k,)).
    Fewer than k components (D < k) are padded with zeros so a 1-D latent still plots."""
    from sklearn.decomposition import PCA

    k_fit = min(k, x.shape[1], x.shape[0])
    pca = PCA(n_components=k_fit, random_state=0).fit(x)
    proj, ratio = pca.transform(x), pca.explained_variance_ratio_
    if k_fit < k:
        proj = np.pad(proj, ((0, 0), (0, k - k_fit)))
        ratio = np.pad(ratio, (0, k - k_fit))
    return proj, ratio


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of rows of x (N, D): PCA to 50 dimensions first (the usual recipe: faster, denoised)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if x.shape[1] > 50:
        x = _pca(x, 50)[0]
    n = len(x)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3))  # sklearn requires perplexity < n
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                max_iter=TSNE_ITER)
    # One OpenMP thread: trials share their machine (several per node under Ray), and sklearn's Barnes-Hut
    # gradient threads spin-wait when the cores are busy: 2000 points took 18 s with the default threads on a
    # loaded 2-core machine and 3 s with one.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x.astype(np.float32))


def _class_colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _scatter(ctx: _Context, ax: Axes, points: np.ndarray, labels: np.ndarray, ticks: bool = False) -> None:
    """Points (N, 2) coloured by class, with a legend of class names outside the axes (one colour and no legend
    for a dataset without labels). ``ticks``: keep the axes' coordinates (raw latent values)."""
    names = ctx.dataset.class_names
    if ctx.labelled:
        for c, (name, colour) in enumerate(zip(names, _class_colours(len(names)), strict=True)):
            mask = labels == c
            if mask.any():
                ax.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.7, color=colour, label=name,
                           linewidths=0, rasterized=True)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=3, fontsize=8, frameon=False)
    else:
        ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.7, color="C0", linewidths=0, rasterized=True)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


@FIGURES.register("latent_pca")
def latent_pca(ctx: _Context) -> Figure:
    """Test embeddings projected on their first two principal components, coloured by class."""
    proj, ratio = _pca(ctx.codes.numpy().astype(np.float64), 2)
    fig = ctx.new_figure(7.0, 5.5, f"PCA of {len(proj)} test embeddings")
    ax = fig.subplots()
    _scatter(ctx, ax, proj, ctx.labels)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}% of variance)")
    return fig


@FIGURES.register("latent_tsne")
def latent_tsne(ctx: _Context) -> Figure:
    """t-SNE of a subsample of test embeddings, coloured by class."""
    sub = gen.subsample(len(ctx.codes), ctx.tsne_points, ctx.seed)
    points = _tsne(ctx.codes[sub].numpy(), ctx.seed)
    fig = ctx.new_figure(7.0, 5.5, f"t-SNE of {len(sub)} test embeddings")
    _scatter(ctx, fig.subplots(), points, ctx.labels[sub.numpy()])
    return fig


@FIGURES.register("image_tsne")
def image_tsne(ctx: _Context) -> Figure:
    """t-SNE of the same test images in pixel space: the baseline an embedding's t-SNE is compared with."""
    sub = gen.subsample(len(ctx.rows), ctx.tsne_points, ctx.seed)
    rows = ctx.rows[sub]
    pixels = ctx.dataset.test.images[rows.to(ctx.dataset.test.device)].flatten(1).cpu().numpy() / 255.0
    points = _tsne(pixels.astype(np.float32), ctx.seed)
    fig = ctx.new_figure(7.0, 5.5, f"t-SNE of {len(sub)} test images in pixel space")
    _scatter(ctx, fig.subplots(), points, ctx.labels[sub.numpy()])
    return fig


@FIGURES.register("interpolation")
def interpolation(ctx: _Context) -> Figure:
    """Decoded linear interpolation z = (1 - a) z_A + a z_B, a = 0..1 in 10 steps, between two test images of
    different classes, with the two originals at the ends."""
    labels = ctx.dataset.test.labels.cpu()[ctx.order]
    first = int(ctx.order[0])
    other = (labels != labels[0]).nonzero()
    second = int(ctx.order[other[0, 0]]) if len(other) else int(ctx.order[1])
    x = ctx.images(torch.tensor([first, second]))
    z = ctx.embed(x)
    alphas = torch.linspace(0, 1, GRID_COLUMNS, device=z.device)
    decoded = gen.decode(ctx.model, (1 - alphas[:, None]) * z[0] + alphas[:, None] * z[1])
    fig = ctx.new_figure(1.1 * (GRID_COLUMNS + 2) + 0.4, 2.2, "linear interpolation in latent space between "
                         "two test images (originals at the ends)")
    axes = fig.subplots(1, GRID_COLUMNS + 2)
    _show(axes[0], x[0])
    axes[0].set_title("image A", fontsize=8, fontweight="bold")
    for j in range(GRID_COLUMNS):
        _show(axes[j + 1], decoded[j])
        axes[j + 1].set_title(f"a={alphas[j].item():.2f}", fontsize=8)
    _show(axes[-1], x[1])
    axes[-1].set_title("image B", fontsize=8, fontweight="bold")
    return fig


def _traversed_dims(ctx: _Context) -> list[tuple[int, str]]:
    """(dimension, row label) for up to ``MAX_TRAVERSED_DIMS`` rows: with generative factors, first the dimension
    most correlated with each factor (labelled with it); then the dimensions of largest test-embedding variance
    (the ones the encoder uses most; a VAE's collapsed dimensions come last)."""
    rows: dict[int, str] = {}
    factors = ctx.dataset.test.factors
    if factors is not None and ctx.dataset.factor_names:
        fc = gen.factor_correlation(ctx.codes, factors[ctx.rows.to(factors.device)].cpu(), ctx.dataset.factor_names)
        for name, dim, corr in zip(fc.names, fc.best_dim.tolist(), fc.best_corr.tolist(), strict=True):
            rows[dim] = (f"{rows[dim]}, " if dim in rows else f"z[{dim}]\n") + f"{name} |r|={corr:.2f}"
    for dim in ctx.codes.var(0, correction=0).argsort(descending=True).tolist():
        rows.setdefault(dim, f"z[{dim}]")
    return list(rows.items())[:MAX_TRAVERSED_DIMS]


@FIGURES.register("traversals")
def traversals(ctx: _Context) -> Figure:
    """One test image's code with one dimension at a time set to prior mean + t * prior std, t = -3..3."""
    prior = ctx.latent_prior
    x = ctx.images(ctx.order[:1])
    base = ctx.embed(x)[0]
    dims = _traversed_dims(ctx)
    values = torch.as_tensor(TRAVERSAL_VALUES, dtype=base.dtype, device=base.device)
    mean, std = prior.mean.to(base.device), prior.std.to(base.device)
    codes = base.repeat(len(dims) * len(values), 1)
    for r, (dim, _) in enumerate(dims):
        codes[r * len(values):(r + 1) * len(values), dim] = mean[dim] + values * std[dim]
    decoded = gen.decode(ctx.model, codes)
    cols = len(values) + 1
    fig = ctx.new_figure(1.1 * cols + 1.2, 1.15 * len(dims) + 1.0,
                         f"latent traversals of one test image: z[i] = mean + t * std of the {prior.source}")
    axes = fig.subplots(len(dims), cols, squeeze=False)
    for r, (_, label) in enumerate(dims):
        _show(axes[r, 0], x[0])
        axes[r, 0].set_ylabel(label, fontsize=8)
        for j in range(len(values)):
            _show(axes[r, j + 1], decoded[r * len(values) + j])
    axes[0, 0].set_title("input", fontsize=8, fontweight="bold")
    for j, t in enumerate(TRAVERSAL_VALUES):
        axes[0, j + 1].set_title("t=0" if t == 0 else f"t={t:+.0f}", fontsize=8)
    return fig


ZEROED_IMAGES = 6  # test images (columns) of the zeroed-dimension figure


def zeroed_codes(base: Tensor, dims: Sequence[int]) -> Tensor:
    """``base`` (n, D) followed by one copy per entry of ``dims`` with that dimension set to 0: (n (1 + len(dims)), D),
    block 0 the codes as they are, block r (rows r n .. (r + 1) n - 1) with dimension ``dims[r - 1]`` zeroed."""
    codes = base.repeat(len(dims) + 1, 1)
    n = len(base)
    for r, dim in enumerate(dims, start=1):
        codes[r * n:(r + 1) * n, dim] = 0.0
    return codes


@FIGURES.register("zeroed_dims")
def zeroed_dims(ctx: _Context) -> Figure:
    """What each latent dimension carries (the shapes study's "zeroing out"): test images (top row), their
    reconstructions, then one row per dimension with that dimension of the code set to 0 before decoding; up to
    ``MAX_CLASS_DIMS`` dimensions, those of largest variance over the test codes when there are more."""
    index = _one_per_class_first(ctx, ZEROED_IMAGES)
    x = ctx.images(index)
    base = ctx.embed(x)
    dims = _dims_by_variance(ctx.codes, MAX_CLASS_DIMS)
    n = len(index)
    decoded = gen.decode(ctx.model, zeroed_codes(base, dims))
    fig = ctx.new_figure(1.0 * n + 1.2, 1.0 * (len(dims) + 2) + 0.8,
                         "test images, their reconstructions, and the reconstruction with one dimension zeroed")
    axes = fig.subplots(len(dims) + 2, n, squeeze=False)
    for j in range(n):
        _show(axes[0, j], x[j])
        for r in range(len(dims) + 1):
            _show(axes[r + 1, j], decoded[r * n + j])
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    for r, dim in enumerate(dims, start=2):
        axes[r, 0].set_ylabel(f"z[{dim}] = 0", fontsize=8)
    return fig


@FIGURES.register("prior_samples")
def prior_samples(ctx: _Context) -> Figure:
    """An 8 x 8 grid of decoded draws from the latent prior."""
    prior = ctx.latent_prior
    decoded = gen.decode(ctx.model, prior.sample(PRIOR_GRID**2, ctx.seed))
    fig = ctx.new_figure(0.9 * PRIOR_GRID, 0.9 * PRIOR_GRID + 0.35, f"decoded samples from the {prior.source}")
    axes = fig.subplots(PRIOR_GRID, PRIOR_GRID)
    for ax, image in zip(axes.flat, decoded, strict=True):
        _show(ax, image)
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    return fig


# --------------------------------------------------------------------------------------------------------------
# The latent space itself: raw 2-D codes, a decoded grid, marginals, per-class distributions, factors; and the
# loss curves of the trial.


@FIGURES.register("latent_2d")
def latent_2d(ctx: _Context) -> Figure:
    """A 2-D latent in its raw coordinates (no PCA: a prior's shifted mean or scale stays visible), by class."""
    ctx.need_2d()
    points = ctx.codes.numpy()
    fig = ctx.new_figure(7.0, 5.5, f"{len(points)} test embeddings in raw latent coordinates")
    ax = fig.subplots()
    _scatter(ctx, ax, points, ctx.labels, ticks=True)
    ax.axhline(0, color="0.6", lw=0.6, zorder=0)
    ax.axvline(0, color="0.6", lw=0.6, zorder=0)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.grid(alpha=0.2)
    return fig


@FIGURES.register("decoded_grid")
def decoded_grid(ctx: _Context) -> Figure:
    """A 10 x 10 grid of decoded 2-D codes over [-3, 3]^2: z[0] along the columns, z[1] up the rows."""
    ctx.need_2d()
    values = np.linspace(-GRID_RANGE, GRID_RANGE, DECODED_GRID)
    # Row r shows z[1] = values[-1 - r] (top = largest), column c shows z[0] = values[c]: the plane as plotted.
    zz = torch.tensor([[values[c], values[DECODED_GRID - 1 - r]] for r in range(DECODED_GRID)
                       for c in range(DECODED_GRID)], dtype=torch.float32)
    images = gen.decode(ctx.model, zz).clamp(0, 1).cpu()  # (100, C, H, W)
    n, c, h, w = images.shape
    mosaic = images.reshape(DECODED_GRID, DECODED_GRID, c, h, w).permute(0, 3, 1, 4, 2)
    mosaic = mosaic.reshape(DECODED_GRID * h, DECODED_GRID * w, c).numpy()
    fig = ctx.new_figure(8.0, 8.4, f"decoded codes on a {DECODED_GRID} x {DECODED_GRID} grid over "
                         f"[{-GRID_RANGE:g}, {GRID_RANGE:g}]^2")
    ax = fig.subplots()
    extent = (-GRID_RANGE - 0.5 * (values[1] - values[0]), GRID_RANGE + 0.5 * (values[1] - values[0]))
    kwargs = {"cmap": "gray", "vmin": 0, "vmax": 1} if c == 1 else {}
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, extent=(*extent, *extent), interpolation="nearest", **kwargs)
    ax.set_xticks(values)
    ax.set_yticks(values)
    ax.set_xticklabels([f"{v:.1f}" for v in values], fontsize=7)
    ax.set_yticklabels([f"{v:.1f}" for v in values], fontsize=7)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    return fig


def _panels(ctx: _Context, n: int, what: str, panel_w: float = 2.6, panel_h: float = 2.1) -> tuple[Figure, Any]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = ctx.new_figure(max(panel_w * cols + 0.4, 7.5), panel_h * rows + 0.9, what)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _dims_by_variance(codes: Tensor, k: int) -> list[int]:
    """Every dimension in order when there are at most k; else the k of largest variance, in index order."""
    d = codes.shape[1]
    if d <= k:
        return list(range(d))
    return sorted(codes.var(0, correction=0).argsort(descending=True)[:k].tolist())


@FIGURES.register("latent_histograms")
def latent_histograms(ctx: _Context) -> Figure:
    """Histogram of each latent dimension over the test embeddings, with the prior's marginal density."""
    codes = ctx.codes.double()
    prior = ctx.latent_prior
    mean, std = prior.mean.double().cpu(), prior.std.double().cpu()
    standard = bool((mean == 0).all() and (std == 1).all())
    dims = _dims_by_variance(codes, MAX_HIST_DIMS)
    shown = "" if len(dims) == codes.shape[1] else f" ({len(dims)} of {codes.shape[1]} of largest variance)"
    fig, axes = _panels(ctx, len(dims), f"latent dimensions over {len(codes)} test embeddings{shown}\n"
                        f"line: the {prior.source}" + ("" if standard else "; dashed: N(0, 1)"))
    for ax, d in zip(axes, dims, strict=True):
        values = codes[:, d].numpy()
        m, s = float(mean[d]), float(std[d])
        lo, hi = min(values.min(), m - 3.5 * s), max(values.max(), m + 3.5 * s)
        if not standard:
            lo, hi = min(lo, -3.5), max(hi, 3.5)
        ax.hist(values, bins=40, range=(lo, hi), density=True, color="C0", alpha=0.6)
        t = np.linspace(lo, hi, 200)
        ax.plot(t, np.exp(-0.5 * ((t - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)), color="C3", lw=1.4)
        if not standard:
            ax.plot(t, np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi), color="0.3", lw=1.0, ls="--")
        ax.set_title(f"z[{d}]: mean {values.mean():.2f}, std {values.std():.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


@FIGURES.register("latent_by_class")
def latent_by_class(ctx: _Context) -> Figure:
    """Distribution of each latent dimension grouped by class (the AE-vs-VAE study's fig. 1): one box per class."""
    if not ctx.labelled:
        raise FigureSkipped("the dataset has no class labels")
    codes = ctx.codes.numpy()
    dims = _dims_by_variance(ctx.codes, MAX_CLASS_DIMS)
    names = ctx.dataset.class_names
    present = [c for c in range(len(names)) if (ctx.labels == c).any()]
    colours = _class_colours(len(names))
    shown = "" if len(dims) == codes.shape[1] else f" ({len(dims)} of {codes.shape[1]} of largest variance)"
    fig, axes = _panels(ctx, len(dims), f"latent dimensions by class, {len(codes)} test embeddings{shown}\n"
                        "boxes: quartiles and median; whiskers: 1.5 IQR",
                        panel_w=max(2.6, 0.32 * len(present) + 0.9))
    for ax, d in zip(axes, dims, strict=True):
        groups = [codes[ctx.labels == c, d] for c in present]
        box = ax.boxplot(groups, showfliers=False, patch_artist=True, widths=0.6)
        for patch, c in zip(box["boxes"], present, strict=True):
            patch.set_facecolor(colours[c])
            patch.set_alpha(0.75)
        for median in box["medians"]:
            median.set_color("k")
        ax.set_xticks(range(1, len(present) + 1))
        ax.set_xticklabels([names[c] for c in present], rotation=90, fontsize=7)
        ax.set_title(f"z[{d}]", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    return fig


@FIGURES.register("factor_correlation")
def factor_correlation_map(ctx: _Context) -> Figure:
    """Pearson correlation of every generative factor with every latent dimension (the AE-vs-VAE study's fig. 2)."""
    factors = ctx.dataset.test.factors
    if factors is None or not ctx.dataset.factor_names:
        raise FigureSkipped("the dataset has no generative factors")
    fc = gen.factor_correlation(ctx.codes, factors[ctx.rows.to(factors.device)].cpu(), ctx.dataset.factor_names)
    corr = fc.corr.T.numpy()  # (F, D)
    f, d = corr.shape
    fig = ctx.new_figure(max(7.0, 0.5 * d + 2.4), 0.55 * f + 2.2,
                         f"Pearson correlation of factors and latent dimensions, {len(ctx.codes)} test images")
    ax = fig.subplots()
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(f))
    ax.set_yticklabels(fc.names)
    ax.set_xticks(range(d))
    ax.set_xticklabels([str(i) for i in range(d)], fontsize=7 if d > 16 else 9)
    ax.set_xlabel("latent dimension")
    if d <= 32:
        for i in range(f):
            for j in range(d):
                ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=6 if d > 12 else 8,
                        color="white" if abs(corr[i, j]) > 0.6 else "black")
    fig.colorbar(image, ax=ax, shrink=0.9, label="correlation")
    return fig


@FIGURES.register("loss_curves")
def loss_curves(ctx: _Context) -> Figure:
    """Training and validation loss per epoch of this trial (its per-epoch history)."""
    points = {key: [(int(h.get("epoch", i + 1)), float(h[key])) for i, h in enumerate(ctx.history) if key in h]
              for key in ("train/loss", "val/loss")}
    if not any(points.values()):
        raise FigureSkipped("no per-epoch history (a stored trial re-evaluated without training)")
    fig = ctx.new_figure(6.4, 4.2, "training and validation loss per epoch")
    ax = fig.subplots()
    for key, colour in (("train/loss", "C0"), ("val/loss", "C1")):
        if points[key]:
            epochs, values = zip(*points[key], strict=True)
            ax.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, ms=3, color=colour,
                    label=key.split("/")[0].replace("val", "validation").replace("train", "training"))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (the trial's objective)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def make_figures(model: nn.Module, dataset: Dataset, names: Iterable[str], out_dir: str | Path, title: str, *,
                 prior: Any = None, seed: int = 0, tsne_points: int = 2000, max_points: int = 5000,
                 history: Sequence[Mapping[str, float]] | None = None) -> list[Path]:
    """Write ``out_dir/<name>.png`` for each name (``EvalConfig.figures``) that applies; returns the paths in
    that order (a skipped figure has none; see ``FigureSkipped``).

    title: first title line of every figure (``figure_title(cfg)``). prior: the latent prior for traversals and
    prior samples, as ``generative.resolve_prior`` takes it (None: N(0, I) for a gaussian bottleneck, else a
    Gaussian fitted to the train latents; pass ``generative.prior_for_trial(cfg)`` for a trial). tsne_points:
    t-SNE subsample; max_points: test images embedded for the projections. history: the trial's per-epoch
    metrics, oldest first (``train/loss``, ``val/loss`` for ``loss_curves``). The model's mode is restored.
    """
    names = list(names)
    if unknown := [n for n in names if n not in FIGURES]:
        raise ValueError(f"unknown figure(s) {unknown}; known: {', '.join(FIGURES.in_registration_order())}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(model, dataset, title, prior, seed, tsne_points, max_points, list(history or []))
    paths = []
    for name in names:
        try:
            fig = FIGURES.get(name)(ctx)
        except FigureSkipped as why:
            log.warning("figure %s skipped: %s", name, why)
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths
