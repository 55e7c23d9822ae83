"""Sanity baselines that fit instead of training, run as trials of a sweep: ``pca`` and ``raw_pixels``.

A reviewer's first question about a learned code is whether it beats the obvious ones: PCA with as many
components as the code has dimensions (reconstruction and probes), and the raw pixels themselves (probes only).
Each baseline is a variant (``objective.variant: pca``) whose preset names a fitter registered here
(``variants.VariantPreset.fit``); ``train.run_trial`` hands such a trial to ``run_baseline``, which fits on the
trial's train split and measures through the very code that measures the autoencoders (``evaluate`` and
``metrics.reconstruction_metrics``), on the same splits, so their rows in the report tables are comparable.

A fitted baseline is an ``nn.Module`` with the AutoEncoder interface the evaluation reads (``encode``, ``decode``,
``forward -> AEOutput``, ``embed``, ``latent_dim``); its fitted tensors are frozen parameters, so its
``state_dict`` is saved and reloaded like a model's (``evaluate`` re-runs on a stored trial unchanged).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from aesweep.data import batches, datasets
from aesweep.evaluation import metrics as metricmod
from aesweep.evaluation.evaluate import evaluate
from aesweep.models.model import AEOutput, Code
from aesweep.registry import Registry

if TYPE_CHECKING:
    from aesweep.spec.trial import TrialConfig

# name -> factory(cfg, in_shape) -> an unfitted baseline module (its ``fit(split)`` fills it in)
BASELINES: Registry[Callable[..., nn.Module]] = Registry("baseline")

# Figures that decode a code: meaningless for a baseline without a decoder (raw_pixels).
DECODING_FIGURES = frozenset({"reconstructions", "interpolation", "traversals", "zeroed_dims", "prior_samples"})


class _Baseline(nn.Module):
    """The interface shared with ``model.AutoEncoder``; subclasses define ``_encode`` and ``_decode``."""

    gaussian = False
    reconstructs = True

    def __init__(self, in_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.latent_dim = int(latent_dim)

    def encode(self, x: Tensor) -> Code:
        """x ``(B, C, H, W)`` in [0, 1] -> Code(z, None, None, feature=z)."""
        z = self._encode(x.flatten(1).float())
        return Code(z, None, None, z)

    def decode(self, z: Tensor) -> Tensor:
        """z ``(B, latent_dim)`` -> x_hat ``(B, C, H, W)``, clipped to [0, 1] (the range every metric assumes)."""
        return self._decode(z).clamp(0, 1).view(-1, *self.in_shape)

    def forward(self, x: Tensor) -> AEOutput:
        z = self.encode(x).z
        return AEOutput(x_hat=self.decode(z), z=z, feature=z)

    def parameter_counts(self) -> dict[str, float]:
        """``model/params`` as an AutoEncoder logs them: the fitted numbers (PCA: mean and components)."""
        total = float(sum(p.numel() for p in self.parameters() if p.dim() > 0))
        return {"model/params": total, "model/params/encoder": total, "model/params/decoder": total}

    def embed(self, x: Tensor, with_logvar: bool = False, with_feature: bool = False) -> Tensor:
        """The code probes read, ``(B, latent_dim)``; ``with_feature`` is ignored (the code is the feature), and
        ``with_logvar`` too: a baseline has no log-variance (an eval section shared with VAEs may ask)."""
        return self.encode(x).z


class PCA(_Baseline):
    """PCA with ``latent_dim`` components, fitted on the train split's pixels in [0, 1].

    z = (x - mean) @ W, x_hat = mean + z @ W^T (clipped to [0, 1]); W ``(D, latent_dim)`` holds the top
    eigenvectors of the train covariance, computed in float64 (the subspace scikit-learn's PCA finds; the signs
    of the columns may differ, which changes neither the reconstruction nor any probe).
    """

    def __init__(self, in_shape: tuple[int, int, int], latent_dim: int):
        super().__init__(in_shape, latent_dim)
        d = in_shape[0] * in_shape[1] * in_shape[2]
        if latent_dim > d:
            raise ValueError(f"pca: latent_dim {latent_dim} exceeds the {d} pixels of an image")
        self.mean = nn.Parameter(torch.zeros(d), requires_grad=False)
        self.components = nn.Parameter(torch.zeros(d, latent_dim), requires_grad=False)
        self.explained_variance = nn.Parameter(torch.zeros(latent_dim), requires_grad=False)

    @torch.no_grad()
    def fit(self, split: datasets.Split, batch_size: int = 4096) -> PCA:
        n = len(split)
        d = self.mean.numel()
        total = torch.zeros(d, dtype=torch.float64, device=split.images.device)
        gram = torch.zeros(d, d, dtype=torch.float64, device=split.images.device)
        for i in range(0, n, batch_size):
            x = batches.to_float(split.images[i:i + batch_size]).flatten(1).double()
            total += x.sum(0)
            gram += x.T @ x
        mean = total / n
        cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        top = torch.argsort(values, descending=True)[: self.latent_dim]
        self.mean.copy_(mean.float())
        self.components.copy_(vectors[:, top].float())
        self.explained_variance.copy_(values[top].float())
        return self

    def _encode(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.components

    def _decode(self, z: Tensor) -> Tensor:
        return self.mean + z @ self.components.T


class RawPixels(_Baseline):
    """The identity code: z = the flattened pixels ``(B, C*H*W)``; probes on it are the raw-pixel baseline.

    It reconstructs perfectly by construction, so ``run_baseline`` reports no reconstruction metric for it.
    """

    reconstructs = False

    def __init__(self, in_shape: tuple[int, int, int], latent_dim: int | None = None):
        d = in_shape[0] * in_shape[1] * in_shape[2]
        super().__init__(in_shape, d)
        # One (unused) parameter: evaluation code finds the device from the model's parameters.
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def fit(self, split: datasets.Split) -> RawPixels:
        return self

    def _encode(self, x: Tensor) -> Tensor:
        return x

    def _decode(self, z: Tensor) -> Tensor:
        return z


@BASELINES.register("pca", "PCA with latent_dim components (reconstruction and probes), fitted on the train split")
def _pca(cfg: TrialConfig, in_shape: tuple[int, int, int]) -> nn.Module:
    return PCA(in_shape, cfg.model.latent_dim)


@BASELINES.register("raw_pixels", "the flattened pixels as the code (probes and clustering; no reconstruction)")
def _raw_pixels(cfg: TrialConfig, in_shape: tuple[int, int, int]) -> nn.Module:
    return RawPixels(in_shape)


def run_baseline(cfg: TrialConfig, model: nn.Module, dataset: datasets.Dataset, report: Any, workdir: Path,
                 device: torch.device) -> tuple[dict[str, float], list[Path]]:
    """Fit ``model`` on ``dataset.train`` and measure it as ``train.run_trial`` measures a trained model.

    Reports once, as epoch 1 (``report(metrics, 1, None)``: nothing to resume), and returns the metrics and
    the files written under ``workdir`` (figures, ``model/state_dict.pt``). The metrics:
    ``val/loss`` and ``test/loss`` (the trial's reconstruction term, ``objective.recon``, of the baseline's
    reconstructions), the test reconstruction metrics of
    ``cfg.eval.metrics`` (none of these for raw_pixels, which has no loss to rank by), everything ``evaluate`` measures, and
    ``time/fit_s``. Figures that decode are skipped for a baseline that does not reconstruct.
    """

    started = time.perf_counter()
    model.to(device)
    model.fit(dataset.train)
    out: dict[str, float] = {"epoch": 1.0, "time/fit_s": time.perf_counter() - started, **model.parameter_counts()}
    o = cfg.objective
    # The loss of a baseline is the trial's reconstruction term (objective.recon) on its reconstructions, so that
    # val/loss ranks it against the trained models of a BCE or MAE sweep too.
    terms = {"mse": {"mse": 1.0}, "bce": {"bce": 1.0}, "mae": {"mae": 1.0},
             "mse+mae": {"mse": 1.0, "mae": o.mae_weight}}[o.recon]
    for prefix, split in (("val", dataset.val), ("test", dataset.test)):
        names = list(cfg.eval.metrics if prefix == "test" else ("mse", "psnr"))
        if model.reconstructs and len(split):
            measured = metricmod.reconstruction_metrics(model, split, sorted({*names, *terms}), prefix=prefix)
            out[f"{prefix}/loss"] = sum(w * measured[f"{prefix}/{name}"] for name, w in terms.items())
            out.update({k: v for k, v in measured.items() if k.split("/", 1)[1] in names})
    ev = cfg.eval if model.reconstructs else cfg.eval.model_copy(
        update={"figures": [f for f in cfg.eval.figures if f not in DECODING_FIGURES], "generative": []})
    measured, files = evaluate(model, dataset, cfg.model_copy(update={"eval": ev}), workdir / "figures",
                           seed=cfg.train.seed, reconstruction=False)
    out.update(measured)
    weights = workdir / "model" / "state_dict.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    out["time/train_s"] = out["time/fit_s"]
    out["time/total_s"] = time.perf_counter() - started
    if report is not None:
        report(out, 1, None)
    return out, [*files, weights]
