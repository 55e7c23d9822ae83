"""objective.kl_scale: the VAE loss equals the hand-computed formula under each normalisation of beta."""
from __future__ import annotations

import math

import pytest
import torch

from aesweep.models.losses import Batch, objective_loss
from aesweep.models.model import AEOutput
from aesweep.spec import variants
from aesweep.spec.distributions import replay
from aesweep.spec.load import parse_spec
from aesweep.training.train import build

C, H, W, D, B = 1, 4, 5, 3, 6


def _output() -> tuple[AEOutput, Batch]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, C, H, W, generator=g)
    x_hat = torch.rand(B, C, H, W, generator=g)
    mu, logvar = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g) * 0.5
    return AEOutput(x_hat=x_hat, z=mu, feature=mu, mu=mu, logvar=logvar), Batch(x=x, target=x)


def _by_hand(out: AEOutput, batch: Batch, beta: float, kl_scale: str) -> float:
    """The three objectives written out element by element, in float64."""
    se = (out.x_hat.double() - batch.target.double()) ** 2  # (B, C, H, W)
    mu, logvar = out.mu.double(), out.logvar.double()
    kl_elems = 0.5 * (mu**2 + logvar.exp() - logvar - 1)  # (B, D)
    if kl_scale == "elbo":  # (sum over pixels of SE + beta * KL summed over dims) / (C*H*W), mean over batch
        per_image = se.flatten(1).sum(1) + beta * kl_elems.sum(1)
        return float(per_image.mean() / (C * H * W))
    if kl_scale == "latent_mean":  # mean over every pixel + beta * mean over every KL element (Keras K.mean)
        return float(se.mean() + beta * kl_elems.mean())
    return float(se.mean() + beta * kl_elems.sum(1).mean())  # unscaled


@pytest.mark.parametrize("kl_scale", variants.KL_SCALES)
@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_vae_loss_equals_the_formula_of_each_kl_scale(kl_scale, beta):
    out, batch = _output()
    objective = variants.compose("vae", {"beta": beta}, elements_per_image=C * H * W, kl_scale=kl_scale,
                                 latent_dim=D)
    total, terms = objective_loss(objective, out, batch, recon="mse")
    assert float(total) == pytest.approx(_by_hand(out, batch, beta, kl_scale), rel=1e-6)
    # loss/kl is logged unweighted, in nats per image, whatever the scale.
    assert float(terms["kl"]) == pytest.approx(float((0.5 * (out.mu**2 + out.logvar.exp() - out.logvar - 1))
                                                     .sum(1).mean()), rel=1e-6)


def test_the_scales_differ_as_documented():
    """elbo = beta / (C*H*W), latent_mean = beta / D, unscaled = beta: the three weights of the kl term."""
    weights = {s: variants.compose("vae", {"beta": 2.0}, elements_per_image=784, kl_scale=s, latent_dim=16)
               .terms["kl"] for s in variants.KL_SCALES}
    assert weights == {"elbo": pytest.approx(2 / 784), "latent_mean": pytest.approx(2 / 16), "unscaled": 2.0}
    # Only the KL is rescaled: an MMD weight and the sparsity weight are taken as given under every scale.
    for s in variants.KL_SCALES:
        assert variants.compose("mmd", {"beta": 2.0}, elements_per_image=784, kl_scale=s, latent_dim=16
                                ).terms["mmd"] == 2.0


def test_the_spec_field_reaches_the_trial_objective():
    spec = parse_spec("name: s\ndataset: {name: shapes}\nmodel: {backbone: mlp, depth: 1, latent_dim: 8}\n"
                      "objective: {variant: vae, beta: 1.0, kl_scale: {grid: [elbo, latent_mean]}}\n")
    trials = [spec.resolve(replay(point)) for point in spec.grid()]
    assert [t.objective.kl_scale for t in trials] == ["elbo", "latent_mean"]

    class _Shape:  # what build() reads of a dataset
        channels, image_size, num_classes = 1, (28, 28), 10

    weights = [build(t, _Shape())[1].terms["kl"] for t in trials]
    assert weights == [pytest.approx(1 / 784), pytest.approx(1 / 8)]
    assert math.isclose(weights[1] / weights[0], 784 / 8)


def test_an_unknown_kl_scale_is_rejected_with_its_line(tmp_path):
    from tests.conftest import cli

    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndataset: {name: shapes}\nobjective:\n  variant: vae\n  kl_scale: per_pixel\n")
    done = cli("validate", str(path))
    assert done.returncode == 2
    assert f"{path}:5:" in done.stderr and "kl_scale" in done.stderr
