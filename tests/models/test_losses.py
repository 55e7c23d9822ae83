"""Loss terms: known values, loop references, and each term decreasing on a fixed batch (solo-learn style)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from aesweep.models import losses
from aesweep.models.losses import Batch, objective_loss
from aesweep.models.model import AEOutput, AutoEncoder
from aesweep.registry import LOSS_TERMS
from aesweep.spec.trial import PriorConfig
from aesweep.spec.variants import compose

SMALL = (1, 8, 8)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def output(b: int = 8, d: int = 4, **fields) -> AEOutput:
    base = {"x_hat": torch.rand(b, *SMALL), "z": torch.randn(b, d), "feature": torch.randn(b, 3)}
    return AEOutput(**{**base, **fields})


def batch_for(out: AEOutput, **fields) -> Batch:
    base = {"x": torch.rand_like(out.x_hat), "target": torch.rand_like(out.x_hat)}
    return Batch(**{**base, **fields})


# ----------------------------------------------------------------------------------------------------
# recon


def test_recon_matches_torch_per_element_means():
    out = output()
    batch = batch_for(out)
    x_hat, t = out.x_hat, batch.target
    assert torch.allclose(losses.recon(out, batch, recon="mse"), F.mse_loss(x_hat, t))
    assert torch.allclose(losses.recon(out, batch, recon="mae"), F.l1_loss(x_hat, t))
    assert torch.allclose(losses.recon(out, batch, recon="bce"), F.binary_cross_entropy(x_hat, t))
    assert torch.allclose(
        losses.recon(out, batch, recon="mse+mae", mae_weight=0.3),
        F.mse_loss(x_hat, t) + 0.3 * F.l1_loss(x_hat, t),
    )
    # "sum": the ELBO convention, sum over the 64 pixels and mean over the batch.
    assert torch.allclose(losses.recon(out, batch, recon="mse", reduction="sum"), 64 * F.mse_loss(x_hat, t))
    assert losses.recon(out, Batch(x=out.x_hat, target=out.x_hat)) == 0
    with pytest.raises(ValueError, match="mse, mae, bce, mse\\+mae"):
        losses.recon(out, batch, recon="huber")


# ----------------------------------------------------------------------------------------------------
# kl


def test_kl_standard_normal_against_standard_prior_is_zero():
    out = output(mu=torch.zeros(8, 4), logvar=torch.zeros(8, 4))
    assert losses.kl(out, batch_for(out)).item() == 0.0


def _kl_reference(mu, logvar, mean, std):
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.as_tensor(mean).expand_as(mu), torch.as_tensor(std).expand_as(mu)), 1)
    return kl_divergence(q, p).mean()


@pytest.mark.parametrize(
    "prior",
    [
        None,
        {"mean": 1.5, "std": 0.5},
        PriorConfig(mean=-0.5, std=2.0),
        PriorConfig(mean=[0.0, 1.0, -1.0, 2.0], std=[1.0, 0.5, 2.0, 3.0]),
        {"mean": [0.0, 1.0, -1.0, 2.0], "std": 0.7},
    ],
)
def test_kl_matches_torch_distributions(prior):
    mu, logvar = torch.randn(8, 4), torch.randn(8, 4)
    out = output(mu=mu, logvar=logvar)
    value = losses.kl(out, batch_for(out), prior=prior)
    if prior is None:
        mean, std = 0.0, 1.0
    elif isinstance(prior, dict):
        mean, std = prior["mean"], prior["std"]
    else:
        mean, std = prior.mean, prior.std
    assert torch.allclose(value, _kl_reference(mu, logvar, mean, std), atol=1e-5)
    assert value > 0


def test_kl_shifted_prior_closed_form():
    # KL(N(0, 1) || N(m, s^2)) = log s + (1 + m^2) / (2 s^2) - 1/2 per dimension, times 4 dimensions.
    out = output(mu=torch.zeros(8, 4), logvar=torch.zeros(8, 4))
    m, s = 2.0, 3.0
    expected = 4 * (math.log(s) + (1 + m**2) / (2 * s**2) - 0.5)
    assert losses.kl(out, batch_for(out), prior={"mean": m, "std": s}).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_kl_errors():
    out = output()
    with pytest.raises(ValueError, match="gaussian"):
        losses.kl(out, batch_for(out))
    out = output(mu=torch.zeros(8, 4), logvar=torch.zeros(8, 4))
    with pytest.raises(ValueError, match="4 values"):
        losses.kl(out, batch_for(out), prior={"mean": [0.0, 1.0], "std": 1.0})


# ----------------------------------------------------------------------------------------------------
# l1_latent, mmd


def test_l1_latent_known_value():
    z = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, -1.0]])
    out = output(b=2, z=z)
    assert losses.l1_latent(out, batch_for(out)).item() == pytest.approx((3.0 + 2.0) / 2)


def _mmd2_biased_loop(x, y, scales=losses.MMD_SCALES):
    d = x.shape[1]

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * d * s)) for s in scales) / len(scales)

    def mean_k(u, v):
        return sum(k(a, b) for a in u for b in v) / (len(u) * len(v))

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def test_mmd2_matches_loop_and_is_zero_on_itself():
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) + 0.5
    assert losses.mmd2(x, y, unbiased=False).item() == pytest.approx(_mmd2_biased_loop(x, y), rel=1e-9)
    assert losses.mmd2(x, x, unbiased=False).item() == pytest.approx(0.0, abs=1e-12)


def test_mmd2_near_zero_for_same_distribution_and_grows_with_shift():
    x, y = torch.randn(512, 8), torch.randn(512, 8)
    assert abs(losses.mmd2(x, y).item()) < 5e-3
    values = [losses.mmd2(x + shift, y).item() for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 0.1


def test_mmd_term_prefers_codes_that_look_like_the_prior():
    z = torch.randn(256, 8)
    on_prior, off_prior = output(b=256, d=8, z=z), output(b=256, d=8, z=3 * z + 2)
    assert losses.mmd(off_prior, batch_for(off_prior)) > 10 * losses.mmd(on_prior, batch_for(on_prior)).abs()


# ----------------------------------------------------------------------------------------------------
# nt_xent, supcon


def _two_view_outputs(p1, p2):
    b = len(p1)
    return output(b=b, projection=p1), output(b=b, projection=p2)


def _nt_xent_loop(p1, p2, t):
    p = F.normalize(torch.cat([p1, p2]), dim=1).double()
    n, b = len(p), len(p1)
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        denom = sum(math.exp(float(p[i] @ p[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(float(p[i] @ p[pos]) / t) / denom)
    return total / n


def test_nt_xent_matches_loop():
    p1, p2 = torch.randn(4, 5), torch.randn(4, 5)
    o1, o2 = _two_view_outputs(p1, p2)
    value = losses.nt_xent(o1, batch_for(o1, view2=o2), temperature=0.5)
    assert value.item() == pytest.approx(_nt_xent_loop(p1, p2, 0.5), rel=1e-5)


def test_nt_xent_identical_views_near_minimum():
    p = torch.randn(16, 32)
    same1, same2 = _two_view_outputs(p, p.clone())
    rand1, rand2 = _two_view_outputs(p, torch.randn(16, 32))
    identical = losses.nt_xent(same1, batch_for(same1, view2=same2), temperature=0.05)
    random = losses.nt_xent(rand1, batch_for(rand1, view2=rand2), temperature=0.05)
    assert identical.item() < 0.05  # the minimum is 0
    assert random.item() > 1.0 and identical < random


def _supcon_loop(p1, p2, labels, t):
    p = F.normalize(torch.cat([p1, p2]), dim=1).double()
    y = torch.cat([labels, labels]).tolist()
    n = len(p)
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(float(p[i] @ p[a]) / t) for a in range(n) if a != i)
        positives = [j for j in range(n) if j != i and y[j] == y[i]]
        total += -sum(math.log(math.exp(float(p[i] @ p[j]) / t) / denom) for j in positives) / len(positives)
    return total / n


def test_supcon_matches_loop():
    p1, p2 = torch.randn(6, 5), torch.randn(6, 5)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    o1, o2 = _two_view_outputs(p1, p2)
    value = losses.supcon(o1, batch_for(o1, view2=o2, labels=labels), temperature=0.3)
    assert value.item() == pytest.approx(_supcon_loop(p1, p2, labels, 0.3), rel=1e-5)


def test_supcon_with_distinct_labels_is_nt_xent():
    p1, p2 = torch.randn(6, 5), torch.randn(6, 5)
    o1, o2 = _two_view_outputs(p1, p2)
    batch = batch_for(o1, view2=o2, labels=torch.arange(6))
    assert torch.allclose(
        losses.supcon(o1, batch, temperature=0.2), losses.nt_xent(o1, batch, temperature=0.2)
    )


def test_contrastive_terms_need_two_views():
    out = output(projection=torch.randn(8, 5))
    with pytest.raises(ValueError, match="two views"):
        losses.nt_xent(out, batch_for(out))
    with pytest.raises(ValueError, match="labels"):
        losses.supcon(out, batch_for(out, view2=out))


# ----------------------------------------------------------------------------------------------------
# cross_entropy


def test_cross_entropy_matches_torch():
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    out = output(logits=logits)
    assert torch.equal(
        losses.cross_entropy(out, batch_for(out, labels=labels)), F.cross_entropy(logits, labels)
    )
    with pytest.raises(ValueError, match="classifier head"):
        losses.cross_entropy(output(), batch_for(out, labels=labels))


def test_softmax_mae_by_hand():
    # Two samples, three classes. logits (0, 0, 0): softmax 1/3 each, label 0: |1/3-1| + 1/3 + 1/3 = 4/3.
    # logits (ln 2, 0, 0): softmax (1/2, 1/4, 1/4), label 1: 1/2 + 3/4 + 1/4 = 3/2. Mean over 6 entries.
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    out = output(b=2, logits=logits)
    value = losses.softmax_mae(out, batch_for(out, labels=torch.tensor([0, 1])))
    assert value.item() == pytest.approx((4 / 3 + 3 / 2) / 6)
    with pytest.raises(ValueError, match="classifier head"):
        losses.softmax_mae(output(), batch_for(out, labels=torch.tensor([0, 1])))


def test_classifier_weighs_softmax_mae_by_its_knob():
    assert compose("classifier", {}).terms == {"cross_entropy": 1.0, "softmax_mae": 0.0}
    assert compose("classifier", {"softmax_mae_weight": 0.5}).terms["softmax_mae"] == 0.5
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    out = output(logits=logits)
    total, terms = objective_loss(compose("classifier", {"softmax_mae_weight": 2.0}), out,
                                  batch_for(out, labels=labels))
    assert total.item() == pytest.approx((terms["cross_entropy"] + 2.0 * terms["softmax_mae"]).item())


# ----------------------------------------------------------------------------------------------------
# objective_loss


def test_objective_loss_is_the_weighted_sum_of_unweighted_terms():
    objective = compose("vae+sparse", {"beta": 0.5, "sparsity": 0.1})
    out = output(mu=torch.randn(8, 4), logvar=torch.randn(8, 4))
    batch = batch_for(out)
    total, values = objective_loss(objective, out, batch, recon="mae", prior=None)
    assert set(values) == {"recon", "kl", "l1_latent"}
    assert torch.allclose(values["recon"], losses.recon(out, batch, recon="mae"))
    assert torch.allclose(values["kl"], losses.kl(out, batch))
    assert torch.allclose(total, values["recon"] + 0.5 * values["kl"] + 0.1 * values["l1_latent"])


def test_objective_loss_knobs_override_but_none_does_not():
    objective = compose("vae", {"prior": {"mean": 1.0, "std": 2.0}})
    out = output(mu=torch.randn(8, 4), logvar=torch.randn(8, 4))
    batch = batch_for(out)
    _, from_objective = objective_loss(objective, out, batch, prior=None)
    assert torch.allclose(from_objective["kl"], losses.kl(out, batch, prior={"mean": 1.0, "std": 2.0}))
    _, overridden = objective_loss(objective, out, batch, prior={"mean": 0.0, "std": 1.0})
    assert torch.allclose(overridden["kl"], losses.kl(out, batch))


def test_zero_weight_term_is_logged_but_not_summed():
    objective = compose("vae", {"beta": 0.0})
    out = output(mu=torch.full((8, 4), float("inf")), logvar=torch.zeros(8, 4))
    total, values = objective_loss(objective, out, batch_for(out))
    assert torch.isfinite(total) and not torch.isfinite(values["kl"])
    assert torch.equal(total, values["recon"])


def test_non_finite_term_is_identifiable():
    objective = compose("vae", {"beta": 1.0})
    out = output(mu=torch.zeros(8, 4), logvar=torch.full((8, 4), 1e4))  # exp overflows
    total, values = objective_loss(objective, out, batch_for(out))
    assert not torch.isfinite(total)
    assert [name for name, v in values.items() if not torch.isfinite(v)] == ["kl"]


# ----------------------------------------------------------------------------------------------------
# Every registered term decreases when a tiny model is optimised on it alone, on a fixed batch.

TERM_SETUPS = {
    "recon": {},
    "l1_latent": {},
    "kl": {"bottleneck": "gaussian"},
    "mmd": {},
    "nt_xent": {"heads": {"projection"}},
    "supcon": {"heads": {"projection"}},
    "cross_entropy": {"heads": {"classifier"}},
    "softmax_mae": {"heads": {"classifier"}},
    # the disentangling and generative families (test_families.py checks their values against the papers)
    # Posteriors start narrow (log-variance -6), so that the codes carry information about x to give up.
    "tc_mi": {"bottleneck": "gaussian", "knobs": {"tc_estimator": "mss"}, "logvar_bias": -6.0},
    "tc_tc": {"bottleneck": "gaussian", "knobs": {"tc_estimator": "mss"}},
    "tc_dimwise_kl": {"bottleneck": "gaussian", "knobs": {"tc_estimator": "mss"}},
    "factor_tc": {"bottleneck": "gaussian", "adversary_widths": [16]},
    "dip_i": {"bottleneck": "gaussian"},
    "dip_ii": {"bottleneck": "gaussian"},
    "info_mmd": {"bottleneck": "gaussian"},
    "vq": {"bottleneck": "vector_quantized", "quantizer": {"codebook_size": 8, "code_dim": 2}},
    "latent_l2": {},
    "decoder_reg": {"knobs": {"decoder_reg": "l2"}},
    # Its Gaussian likelihood carries the constant 0.5 log(pi) per pixel, which no model can lower.
    # the rest is the squared error of fitting noise images, of which a 4-d code removes little: a smaller drop.
    "iwae": {"bottleneck": "gaussian", "floor": math.prod(SMALL) * 0.5 * math.log(math.pi), "ratio": 0.95},
}


def test_every_registered_term_has_a_decrease_test():
    assert set(TERM_SETUPS) == set(LOSS_TERMS.names())


@pytest.mark.parametrize("name", sorted(TERM_SETUPS))
def test_term_decreases_on_a_fixed_batch(name):
    model = AutoEncoder(
        "mlp",
        SMALL,
        4,
        heads=TERM_SETUPS[name].get("heads", ()),
        num_classes=3,
        projection_dim=8,
        bottleneck=TERM_SETUPS[name].get("bottleneck", "deterministic"),
        quantizer=TERM_SETUPS[name].get("quantizer"),
        adversary_widths=TERM_SETUPS[name].get("adversary_widths"),
    )
    x = torch.rand(16, *SMALL)
    x2 = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)  # the second "augmented" view
    labels = torch.arange(16) % 3
    term = LOSS_TERMS.get(name)
    if (bias := TERM_SETUPS[name].get("logvar_bias")) is not None:
        with torch.no_grad():
            model.bottleneck.linear.bias[4:] = bias  # the log-variance half of (mu, logvar)
    # An adversary (FactorVAE's discriminator) is held fixed: the term trains the model against it.
    adversary = {id(p) for p in model.adversary.parameters()} if model.adversary is not None else set()
    optimizer = torch.optim.Adam([p for p in model.parameters() if id(p) not in adversary], lr=1e-2)
    knobs = TERM_SETUPS[name].get("knobs", {})

    def loss(seed: int | None = None) -> torch.Tensor:
        if seed is not None:  # the same sampling noise (gaussian z, MMD prior draws) for both measurements
            torch.manual_seed(seed)
        out = model(x)
        return term(out, Batch(x=x, target=x, labels=labels, view2=model(x2), model=model), temperature=0.5, **knobs)

    with torch.no_grad():
        before = loss(seed=1).item()
    for _ in range(40):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss(seed=1).item()
    floor = TERM_SETUPS[name].get("floor", 0.0)
    assert after - floor < TERM_SETUPS[name].get("ratio", 0.8) * (before - floor), (name, before, after)
