"""The disentangling and generative families checked with file and line: a knob with no default, code sizes that
do not divide the latent, an IWAE that cannot decode its samples, parts that need different bottlenecks, a
family's knob on a variant that does not own it; and a well-formed sweep over every family validates."""
from __future__ import annotations

import pytest

from tests.conftest import cli, spec_file_problems

problems = spec_file_problems


HEAD = "name: s\ndataset: {name: shapes}\nmodel: {latent_dim: 10}\n"


@pytest.mark.parametrize("objective, expected", [
    ("objective: {variant: factorvae}\n",
     "spec.yaml:4: objective.variant: variant factorvae needs objective.discriminator (no default): e.g. "
     "discriminator: {widths: [1000, 1000, 1000, 1000, 1000], lr: 1.0e-4}"),
    ("objective:\n  variant: vqvae\n  code_dim: 4\n",
     "spec.yaml:6: objective.code_dim: code_dim 4 does not divide latent_dim 10 (z is cut into latent_dim / "
     "code_dim code vectors)"),
    ("objective:\n  variant: {grid: [ae, vqvae]}\n  vqvae: {code_dim: 3}\n",
     "spec.yaml:6: objective.vqvae.code_dim: code_dim 3 does not divide latent_dim 10 (z is cut into latent_dim / "
     "code_dim code vectors)"),
    ("objective:\n  variant: iwae\n  recon: mse+mae\n",
     "spec.yaml:6: objective.recon: iwae needs one likelihood: recon mse, bce or mae"),
    ("objective: {variant: vqvae+vae}\n",
     "spec.yaml:4: objective.variant: variant 'vqvae+vae': its parts need different bottlenecks (gaussian, "
     "vector_quantized)"),
    ("objective:\n  variant: vae\n  gamma: 3.0\n",
     "spec.yaml:6: objective.gamma: gamma is not a knob of variant vae (it belongs to: tcvae, factorvae)"),
    ("objective:\n  variant: factorvae\n  discriminator: {widths: []}\n",
     "spec.yaml:6: objective.discriminator.widths: list should have at least 1 item after validation, not 0"),
    ("objective:\n  variant: tcvae\n  tc_estimator: exact\n",
     "spec.yaml:6: objective.tc_estimator: input should be 'mws' or 'mss'"),
    ("objective:\n  variant: vqvae\n  ema_decay: 1.0\n",
     "spec.yaml:6: objective.ema_decay: input should be less than 1"),
])
def test_family_misuse_is_rejected_with_file_and_line(tmp_path, objective, expected):
    assert problems(tmp_path, HEAD + objective) == [expected]


def test_iwae_refuses_a_skip_connection_decoder(tmp_path):
    text = "name: s\ndataset: {name: shapes}\nmodel: {backbone: conv, skip_connections: true}\nobjective: {variant: iwae}\n"
    assert problems(tmp_path, text) == [
        "spec.yaml:3: model.skip_connections: iwae decodes k samples of z alone, without the encoder maps a "
        "skip-connection decoder needs"]


def test_a_sweep_over_every_family_with_searched_knobs_validates(tmp_path):
    path = tmp_path / "families.yaml"
    path.write_text(
        "name: families\n"
        "dataset: {name: shapes, train_size: 480}\n"
        "model: {backbone: conv, width: 0.125, latent_dim: {grid: [8, 16]}}\n"
        "objective:\n"
        "  variant: {grid: [tcvae, factorvae, dipvae1, dipvae2, infovae, wae, vqvae, rae, iwae]}\n"
        "  tcvae: {beta: {loguniform: [1.0, 10.0]}, tc_estimator: mss}\n"
        "  factorvae: {gamma: {uniform: [5.0, 50.0]}, discriminator: {widths: [64, 64]}}\n"
        "  dipvae1: {lambda_od: {loguniform: [1.0, 100.0]}}\n"
        "  vqvae: {codebook_size: {choice: [16, 64]}, code_dim: 4, ema_decay: 0.99}\n"
        "  rae: {decoder_reg: {choice: [l2, gp]}}\n"
        "  iwae: {iwae_samples: {int: [1, 10]}}\n"
        "train: {epochs: 2}\n"
        "search: {algorithm: tpe, num_samples: 4, metrics: {val/mse: min}}\n"
    )
    done = cli("validate", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
