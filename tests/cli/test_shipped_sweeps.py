"""Every shipped sweep validates (each stage too) and smoke-runs (`--smoke`: 1-2 trials, 1 epoch, a few hundred
images) through real Ray and MLflow, as lightning-hydra-template runs every experiment config.

Datasets: generated shapes; the real Fashion-MNIST from Debian's dataset-fashion-mnist; CIFAR-10 and MNIST, which
cannot be downloaded here, as generated files in the exact upstream format that the real loaders read and
checksum (tests/support/trust_generated.py points torchvision's md5 tables at them, in this process and in every Ray
worker).
"""
from __future__ import annotations

import logging
import math
import os

import pytest
import torchvision
import yaml

from aesweep.service import driver, loopback, search_space
from tests.conftest import REPO, Store, cli, load
from tests.support.trust_generated import trust_generated_files
from tests.support.upstream_files import cifar_files, gz, idx_files, write

pytestmark = pytest.mark.slow

SHIPPED = sorted(p.name for p in (REPO / "sweeps").glob("*.yaml"))
FASHION = "/usr/share/datasets/fashion-mnist"


def test_the_studies_are_shipped_and_validate_with_every_stage():
    # One file per study: 000 cifar, 001 paradigms, 002 shapes, 003 ae-vae, 004 paradigms-supcon.
    assert {"quickstart.yaml", "cifar.yaml", "paradigms.yaml", "paradigms-supcon.yaml", "shapes.yaml",
            "ae-vae.yaml"} <= set(SHIPPED)
    done = cli("validate", *[f"sweeps/{name}" for name in SHIPPED])
    assert done.returncode == 0, done.stderr
    for name in SHIPPED:
        text = (REPO / "sweeps" / name).read_text()
        assert text.startswith("#"), f"{name}: no comment header saying which study it follows"
        stages = yaml.safe_load(text).get("stages", {})
        for stage in stages:
            assert f"sweeps/{name} --stage {stage}: ok" in done.stdout
    cifar = load(REPO / "sweeps" / "cifar.yaml")
    assert len(cifar.grid()) == 20 and cifar.resources.gpu == 0.25
    trial = cifar.resolve()
    assert trial.eval.protocol == "paper" and trial.train.early_stopping.monitor == "train/loss"
    search = load(REPO / "sweeps" / "cifar.yaml", stages=["search"])
    assert search.name == "cifar-search" and search.search.algorithm == "nsga2"
    # A multi-objective trade-off, chosen on validation: test is measured once, never searched on.
    assert set(search.search.metrics) == {"val/mse", "val/probe/knn/acc"}
    assert search.resolve().eval.online_probe_every == 1
    # The five knobs: beta, sparsity, noise sigma, contrastive temperature and latent size.
    assert {"model.latent_dim", "objective.sparse.sparsity", "objective.denoising.noise_sigma",
            "objective.vae.beta", "objective.contrastive.temperature"} <= set(search.parameters())
    # Study 003's arms are stages, not a cross product: 2 x 3 x 10 folds; 2 x 8 x 10; 4 x 10.
    ae_vae = REPO / "sweeps" / "ae-vae.yaml"
    assert [len(load(ae_vae, stages=st).grid()) for st in ([], ["depth"], ["priors"], ["betas"])] == [60, 160, 40, 40]
    assert load(ae_vae, stages=["betas"]).resolve().objective.kl_scale == "elbo"


@pytest.fixture(scope="module")
def upstream_files(tmp_path_factory):
    """Generated CIFAR-10 and MNIST files in their upstream layout, trusted by torchvision here and in workers."""
    root = tmp_path_factory.mktemp("upstream")
    files, _ = cifar_files(per_batch=120)
    write(root / "cifar-10-batches-py", files)
    idx, _ = idx_files(n_train=400, n_test=120)
    write(root / "MNIST" / "raw", gz(idx))
    saved = {"cifar": (torchvision.datasets.CIFAR10.train_list, torchvision.datasets.CIFAR10.test_list,
                       torchvision.datasets.CIFAR10.meta), "mnist": torchvision.datasets.MNIST.resources}
    old_env = os.environ.get("AESWEEP_TEST_DATA")
    os.environ["AESWEEP_TEST_DATA"] = str(root)
    trust_generated_files()
    yield root
    cls = torchvision.datasets.CIFAR10
    cls.train_list, cls.test_list, cls.meta = saved["cifar"]
    torchvision.datasets.MNIST.resources = saved["mnist"]
    if old_env is None:
        os.environ.pop("AESWEEP_TEST_DATA", None)
    else:
        os.environ["AESWEEP_TEST_DATA"] = old_env


@pytest.fixture(scope="module")
def smoke_ray(upstream_files):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Workers inherit this process's environment (AESWEEP_TEST_DATA, and PYTHONPATH so that they can import the
    # tests package for the setup hook).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             **loopback.init_kwargs(), runtime_env={"worker_process_setup_hook": "tests.support.trust_generated.trust_generated_files"})
    yield ray
    ray.shutdown()


# (file, stages): every shipped sweep once; stages whose search differs from the base run too.
CASES = [(name, []) for name in SHIPPED if name != "quickstart.yaml"]  # quickstart: tests/service/test_driver.py
CASES += [("cifar.yaml", ["search"]), ("cifar.yaml", ["baselines"]), ("ae-vae.yaml", ["priors"]),
          ("paradigms.yaml", ["cifar"]), ("paradigms.yaml", ["skip"]), ("paradigms-supcon.yaml", ["supcon"]),
          ("shapes.yaml", ["vae"])]


@pytest.mark.parametrize(("name", "stages"), CASES, ids=[f"{n}{''.join('+' + s for s in st)}" for n, st in CASES])
def test_shipped_sweep_smoke_runs(name, stages, smoke_ray, upstream_files, tmp_path):
    path = REPO / "sweeps" / name
    spec = load(path, stages=stages)
    if spec.resolve().dataset.name == "fashion_mnist" and not os.path.isdir(FASHION):
        pytest.skip("the real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    overrides = [*search_space.smoke_overrides(spec), "resources.gpu=0", "resources.cpu=1"]
    if spec.resolve().dataset.name in ("cifar10", "mnist"):
        overrides.append(f"dataset.root={upstream_files}")
    if name == "cifar.yaml" and stages == ["baselines"]:
        # The published protocol (GridSearchCV over three preprocessings, 5-fold CV) runs in the cifar.yaml case;
        # on 3,072 raw-pixel features its grid search alone took 400 s of this file's ~700.
        overrides.append("eval.protocol=fast")
    smoke = load(path, overrides, stages=stages)
    store = Store(tmp_path)
    outcome = driver.run_sweep(smoke, storage=store.storage, tracking_uri=store.uri, max_points=2)

    assert outcome.counts["failed"] == 0, [t["reason"] for t in outcome.trials]
    assert outcome.counts["finished"] >= 1
    parent = store.parent(smoke.name)
    children = store.children(parent.info.run_id)
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("aesweep.failure")
        metrics = child.data.metrics
        resolved = smoke.resolve()
        if child.data.params.get("objective.variant") == "raw_pixels":  # probes only: the code is the image
            assert not any(k.startswith("test/") for k in metrics)
            assert 0.0 <= metrics[f"probe/{resolved.eval.probes[0]}/acc"] <= 1.0
            continue
        for metric in resolved.eval.metrics:
            assert math.isfinite(metrics[f"test/{metric}"]), metric
        for probe in resolved.eval.probes:
            assert 0.0 <= metrics[f"probe/{probe}/acc"] <= 1.0, probe
            if resolved.eval.probe_splits:
                assert 0.0 <= metrics[f"probe/{probe}/train_acc"] <= 1.0
                assert 0.0 <= metrics[f"probe/{probe}/val_acc"] <= 1.0
        for method in resolved.eval.clustering:
            assert math.isfinite(metrics[f"cluster/{method}/nmi"]), method
        if "coverage" in resolved.eval.generative:
            assert 0.0 <= metrics["gen/coverage"] <= 1.0
        figures = {p for p in store.artifacts(child.info.run_id) if p.startswith("figures/")}
        # Figures that do not apply are skipped with a note: the 2-D ones off a 2-D code, loss curves of a
        # baseline (fitted, no epochs).
        latent = int(child.data.params["model.latent_dim"])
        baseline = child.data.params.get("objective.variant") in ("pca", "raw_pixels")
        expected = {f for f in resolved.eval.figures
                    if not (f in ("latent_2d", "decoded_grid") and latent != 2)
                    and not (f == "loss_curves" and baseline)}
        assert {f"figures/{f}.png" for f in expected} <= figures
    if smoke.resolve().dataset.folds:
        assert {c.data.params["dataset.fold"] for c in children} <= {str(k) for k in range(10)}
        assert {c.data.params["dataset.folds"] for c in children} == {"10"}


def test_the_disentangle_study_sweeps_every_family(smoke_ray, tmp_path):
    """Every family of the variant table trains in the disentangle study's families stage (smoke-sized) on real
    Ray, and each finished trial holds the disentanglement measures: online (val/dis/mig, every epoch) and final."""
    path = REPO / "sweeps" / "disentangle.yaml"
    spec = load(path, stages=["families"])
    overrides = [*search_space.smoke_overrides(spec), "resources.gpu=0", "resources.cpu=1",
                 "eval.disentanglement=[mig, dci, factorvae]", "eval.figures=[]",
                 # the study's 5 x 1000 discriminator is most of a smoke trial's time: a small one
                 "objective.factorvae.discriminator={widths: [32, 32]}"]
    smoke = load(path, overrides, stages=["families"])
    families = set(smoke.possible_variants())
    assert {"tcvae", "factorvae", "dipvae1", "dipvae2", "infovae", "wae", "vqvae", "rae", "iwae"} <= families
    store = Store(tmp_path)
    outcome = driver.run_sweep(smoke, storage=store.storage, tracking_uri=store.uri)

    assert outcome.counts["failed"] == 0, [t["reason"] for t in outcome.trials]
    children = store.children(store.parent(smoke.name).info.run_id)
    assert {c.data.params["objective.variant"] for c in children} == families
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("aesweep.failure")
        metrics = child.data.metrics
        for key in ("dis/mig", "dis/dci_disentanglement", "dis/factorvae_score", "val/dis/mig"):
            assert 0.0 <= metrics[key] <= 1.0, (child.data.params["objective.variant"], key)
