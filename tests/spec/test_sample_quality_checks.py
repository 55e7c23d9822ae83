"""eval.sample_quality checked with file and line: a decoder to sample from, labels for the classifier extractor,
a gmm with components, registered extractors and measures."""
from __future__ import annotations

import pytest

from aesweep.spec.load import parse_spec
from tests.conftest import cli, spec_file_problems

BASE = "name: s\ndataset: {name: shapes}\nobjective:\n  variant: {variant}\neval:\n  sample_quality:\n"


problems = spec_file_problems


@pytest.mark.parametrize("variant, why", [
    ("contrastive", "variant contrastive trains no decoder (recon weight 0; set objective.recon_weight > 0)"),
    ("supcon", "variant supcon trains no decoder (recon weight 0; set objective.recon_weight > 0)"),
    ("classifier", "variant classifier trains no decoder (recon weight 0; set objective.recon_weight > 0)"),
    ("raw_pixels", "variant raw_pixels has no decoder"),
])
def test_sample_quality_needs_a_decoder(tmp_path, variant, why):
    text = BASE.replace("{variant}", variant) + "    features: pixels\n"
    assert problems(tmp_path, text) == [f"spec.yaml:6: eval.sample_quality: sample quality decodes latent samples, "
                                        f"and {why}"]


def test_a_variant_drawn_among_others_is_named(tmp_path):
    text = BASE.replace("{variant}", "{grid: [ae, vae, contrastive]}") + "    features: pixels\n"
    assert problems(tmp_path, text) == [
        "spec.yaml:6: eval.sample_quality: sample quality decodes latent samples, and variant contrastive trains "
        "no decoder (recon weight 0; set objective.recon_weight > 0)"]


@pytest.mark.parametrize("tail, expected", [
    ("    latent_density: gmm\n    gmm_components: 0\n",
     "spec.yaml:8: eval.sample_quality.gmm_components: input should be greater than 0"),
    ("    gmm_components: 4\n",
     "spec.yaml:7: eval.sample_quality.gmm_components: gmm_components is set but latent_density is not gmm"),
    ("    latent_density: flow\n",
     "spec.yaml:7: eval.sample_quality.latent_density: input should be 'prior' or 'gmm'"),
    ("    k: 0\n", "spec.yaml:7: eval.sample_quality.k: input should be greater than 0"),
    ("    k: 8\n  gen_samples: 8\n",
     "spec.yaml:8: eval.gen_samples: prdc's k = 8 nearest neighbours need more than 8 samples, got gen_samples 8"),
    ("    metrics: []\n", "spec.yaml:7: eval.sample_quality.metrics: list should have at least 1 item after validation, not 0"),
    ("    metrics: [fid, kid]\n",
     "spec.yaml:7: eval.sample_quality.metrics: unknown sample-quality measure 'kid'; known: fid, prdc"),
    ("    features: vgg\n", "spec.yaml:7: eval.sample_quality.features: unknown sample feature extractor 'vgg'; "
                           "known: classifier, inception, pixels"),
])
def test_bad_sample_quality_sections_are_rejected_with_file_and_line(tmp_path, tail, expected):
    assert problems(tmp_path, BASE.replace("{variant}", "ae") + tail) == [expected]


def test_the_classifier_extractor_needs_labels(tmp_path):
    text = ("name: s\ndataset: {name: frey_face}\neval:\n  probes: []\n  clustering: []\n"
            "  sample_quality: {features: classifier}\n")
    assert problems(tmp_path, text) == [
        "spec.yaml:6: eval.sample_quality.features: the classifier extractor is trained on labels; dataset "
        "frey_face has none (use pixels or inception)"]


def test_good_sections_validate_and_reach_the_trial():
    spec = parse_spec(BASE.replace("{variant}", "{grid: [ae, vae]}")
                      + "    features: {grid: [pixels, classifier]}\n    latent_density: gmm\n"
                        "    gmm_components: 3\n", "spec.yaml")
    trial = spec.resolve()
    assert trial.eval.sample_quality.latent_density == "gmm" and trial.eval.sample_quality.gmm_components == 3
    assert trial.eval.sample_quality.metrics == ["fid", "prdc"] and trial.eval.sample_quality.k == 5
    assert len(spec.grid()) == 4  # the extractor is searchable like any field
    # A contrastive encoder that also reconstructs has a decoder to sample from.
    parse_spec("name: s\nobjective: {variant: contrastive, recon_weight: 1.0}\n"
               "eval: {sample_quality: {features: pixels}}\n", "spec.yaml")


def test_validate_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace("{variant}", "ae") + "    latent_density: gmm\n    gmm_components: 0\n")
    done = cli("validate", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert f"{path}:8: eval.sample_quality.gmm_components: input should be greater than 0" in lines
