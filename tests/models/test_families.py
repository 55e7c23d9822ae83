"""The disentangling and generative families: each loss on a fixed batch equal to its paper's formula computed
independently here (loops and numpy, not the package's vectorised code), and the known answers each admits.

pythae (the reference library for these families) pins pydantic 1 and an older torch, so it cannot be installed
beside this package; the references are the papers' equations and, where named, the authors' code.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aesweep.models import losses
from aesweep.models.losses import Batch, mmd2, tc_decomposition
from aesweep.models.model import AEOutput, AutoEncoder, VectorQuantizedBottleneck
from aesweep.training.train import codebook_use

SMALL = (1, 8, 8)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _log_normal(x: float, mu: float, logvar: float) -> float:
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mu) ** 2 / math.exp(logvar))


def _tc_by_loops(z, mu, logvar, n: int, estimator: str) -> dict[str, float]:
    """Chen et al. 2018's estimators written out with explicit sums over the batch (their eqs. S5-S7)."""
    b, d = z.shape
    weights = np.full((b, b), 1 / (b * n)) if estimator == "mws" else _authors_mss_matrix(b, n)
    mi = tc = dwkl = 0.0
    for i in range(b):
        log_qz_x = sum(_log_normal(z[i, k], mu[i, k], logvar[i, k]) for k in range(d))
        joint = [sum(_log_normal(z[i, k], mu[j, k], logvar[j, k]) for k in range(d)) for j in range(b)]
        log_qz = math.log(sum(weights[i, j] * math.exp(joint[j]) for j in range(b)))
        log_prod = sum(math.log(sum(weights[i, j] * math.exp(_log_normal(z[i, k], mu[j, k], logvar[j, k]))
                                    for j in range(b))) for k in range(d))
        log_pz = sum(_log_normal(z[i, k], 0.0, 0.0) for k in range(d))
        mi += (log_qz_x - log_qz) / b
        tc += (log_qz - log_prod) / b
        dwkl += (log_prod - log_pz) / b
    return {"mi": mi, "tc": tc, "dimwise_kl": dwkl}


def _authors_mss_matrix(b: int, n: int) -> np.ndarray:
    """rtqichen/beta-tcvae's _log_importance_weight_matrix, transcribed (exp of it)."""
    m = b - 1
    strat = (n - m) / (n * m)
    w = np.full((b, b), 1 / m)
    w.reshape(-1)[:: m + 1] = 1 / n
    w.reshape(-1)[1 :: m + 1] = strat
    w[m - 1, 0] = strat
    return w


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_decomposition_equals_the_papers_sums(estimator):
    b, d, n = 6, 3, 50
    mu, logvar = torch.randn(b, d, dtype=torch.float64), 0.3 * torch.randn(b, d, dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(b, d, dtype=torch.float64)
    ours = tc_decomposition(z, mu, logvar, dataset_size=n, estimator=estimator)
    if estimator == "mss":  # the loops' weights are the authors' matrix
        assert np.allclose(np.log(_authors_mss_matrix(b, n)), losses._log_importance_weights(b, n, z).numpy())
    reference = _tc_by_loops(z.numpy(), mu.numpy(), logvar.numpy(), n, estimator)
    for key, value in reference.items():
        assert ours[key].item() == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_the_three_parts_sum_to_the_kl_estimate():
    """MI + TC + dimension-wise KL = E[log q(z|x) - log p(z)] exactly, under either estimator."""
    mu, logvar = torch.randn(32, 5, dtype=torch.float64), 0.2 * torch.randn(32, 5, dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    zero = torch.zeros((), dtype=torch.float64)
    kl_sample = (losses.log_normal(z, mu, logvar).sum(1) - losses.log_normal(z, zero, zero).sum(1)).mean()
    for estimator in ("mws", "mss"):
        parts = tc_decomposition(z, mu, logvar, dataset_size=1000, estimator=estimator)
        assert (parts["mi"] + parts["tc"] + parts["dimwise_kl"]).item() == pytest.approx(kl_sample.item(), rel=1e-10)


def test_total_correlation_is_near_zero_for_independent_codes_and_the_mutual_information_for_copies():
    """Known answers: an aggregate posterior whose two dimensions are independent has TC ~ 0; a code whose two
    dimensions are the same N(0, 1) value each seen through N(0, s^2) noise has TC = their mutual information,
    0.5 log((1 + s^2)^2 / ((1 + s^2)^2 - 1)) (0.92 nats at s = 0.3)."""
    b, s = 2000, 0.3
    logvar = torch.full((b, 2), math.log(s ** 2), dtype=torch.float64)
    mu = torch.randn(b, 2, dtype=torch.float64)
    independent = tc_decomposition(mu + s * torch.randn_like(mu), mu, logvar, dataset_size=b, estimator="mss")
    copied = mu[:, :1].repeat(1, 2)
    dependent = tc_decomposition(copied + s * torch.randn_like(copied), copied, logvar, dataset_size=b,
                                 estimator="mss")
    assert abs(independent["tc"].item()) < 0.05
    assert dependent["tc"].item() == pytest.approx(0.5 * math.log((1 + s ** 2) ** 2 / ((1 + s ** 2) ** 2 - 1)),
                                                   abs=0.1)


def test_factor_tc_is_the_discriminators_log_odds_and_it_learns_to_see_dependence():
    model = AutoEncoder("mlp", SMALL, 2, bottleneck="gaussian", adversary_widths=[32, 32])
    z = torch.randn(512, 2)
    out = AEOutput(x_hat=torch.rand(512, *SMALL), z=z, feature=torch.zeros(512, 1))
    logits = model.adversary(z)
    assert losses.factor_tc(out, Batch(x=out.x_hat, target=out.x_hat, model=model)).item() == pytest.approx(
        (logits[:, 0] - logits[:, 1]).mean().item(), rel=1e-6)

    def trained_estimate(codes: torch.Tensor) -> float:
        torch.manual_seed(1)
        disc = AutoEncoder("mlp", SMALL, 2, bottleneck="gaussian", adversary_widths=[32, 32]).adversary
        optimizer = torch.optim.Adam(disc.parameters(), lr=1e-2)
        for _ in range(300):
            optimizer.zero_grad()
            losses.tc_discriminator_loss(disc, codes).backward()
            optimizer.step()
        with torch.no_grad():
            logits = disc(codes)
        return (logits[:, 0] - logits[:, 1]).mean().item()

    independent = trained_estimate(torch.randn(512, 2))
    dependent = trained_estimate(torch.randn(512, 1).repeat(1, 2) + 0.05 * torch.randn(512, 2))
    assert abs(independent) < 0.3
    assert dependent > 1.0


def test_permuted_dimensions_keep_each_marginal_and_break_the_joint():
    z = torch.arange(40, dtype=torch.float32).view(20, 2)
    shuffled = losses.permute_dims(z)
    for k in range(2):
        assert sorted(shuffled[:, k].tolist()) == sorted(z[:, k].tolist())
    assert not torch.equal(shuffled, z)


def _dip_reference(cov: np.ndarray, lambda_od: float, lambda_d: float) -> float:
    d = cov.shape[0]
    off = sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    diag = sum((cov[i, i] - 1) ** 2 for i in range(d))
    return lambda_od * off + lambda_d * diag


def test_dip_vae_penalties_equal_the_papers_formulas():
    mu, logvar = torch.randn(64, 3, dtype=torch.float64) * 2, 0.5 * torch.randn(64, 3, dtype=torch.float64)
    out = AEOutput(x_hat=torch.rand(64, *SMALL), z=mu, feature=mu, mu=mu, logvar=logvar)
    batch = Batch(x=out.x_hat, target=out.x_hat)
    cov_mu = np.cov(mu.numpy(), rowvar=False, bias=True)  # Cov_p(x)[mu(x)], normalised by N as in Kumar et al.
    assert losses.dip_i(out, batch, lambda_od=3.0, lambda_d=7.0).item() == pytest.approx(
        _dip_reference(cov_mu, 3.0, 7.0), rel=1e-10)
    cov_z = cov_mu + np.diag(np.exp(logvar.numpy()).mean(0))  # eq. (7): E[Sigma(x)] + Cov[mu(x)]
    assert losses.dip_ii(out, batch, lambda_od=3.0, lambda_d=7.0).item() == pytest.approx(
        _dip_reference(cov_z, 3.0, 7.0), rel=1e-10)


def test_dip_penalty_is_zero_for_a_whitened_code():
    x = torch.randn(256, 4, dtype=torch.float64)
    x = x - x.mean(0)
    white = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / 256)).T
    out = AEOutput(x_hat=torch.rand(256, *SMALL), z=white, feature=white, mu=white, logvar=torch.zeros_like(white))
    assert losses.dip_i(out, Batch(x=out.x_hat, target=out.x_hat)).item() == pytest.approx(0.0, abs=1e-16 + 1e-9)


def test_imq_mmd_equals_the_wae_formula():
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64) + 0.5
    scales = (0.1, 1.0)

    def k(a, b):
        return np.mean([(2 * 3 * s) / (2 * 3 * s + np.sum((a - b) ** 2)) for s in scales])

    xs, ys = x.numpy(), y.numpy()
    n, m = len(xs), len(ys)
    kxx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(xs[i], ys[j]) for i in range(n) for j in range(m)) / (n * m)
    assert mmd2(x, y, kernel="imq", scales=scales).item() == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)


def test_vector_quantiser_snaps_to_the_nearest_code_and_passes_gradients_straight_through():
    vq = VectorQuantizedBottleneck(5, 4, codebook_size=6, code_dim=2)
    h = torch.randn(7, 5, requires_grad=True)
    z, _, _, quantized = vq(h)
    vectors = vq.linear(h).view(7, 2, 2).detach().numpy()
    codebook = vq.codebook.detach().numpy()
    for i in range(7):
        for g in range(2):
            nearest = int(np.argmin(((codebook - vectors[i, g]) ** 2).sum(1)))
            assert quantized.codes[i, g].item() == nearest
            assert np.allclose(z[i].view(2, 2)[g].detach().numpy(), codebook[nearest])
    z.sum().backward()  # straight through: d z / d z_e is the identity, so h gets the Linear's gradient
    assert torch.allclose(h.grad, vq.linear.weight.sum(0).expand(7, 5))


def test_vq_loss_is_codebook_plus_commitment_and_ema_moves_codes_to_their_means():
    vq = VectorQuantizedBottleneck(3, 2, codebook_size=4, code_dim=2)
    h = torch.randn(16, 3)
    z, _, _, q = vq(h)
    out = AEOutput(x_hat=torch.rand(16, *SMALL), z=z, feature=h, vq=q)
    batch = Batch(x=out.x_hat, target=out.x_hat)
    gap = ((q.z_e - q.z_q) ** 2).mean().item()
    assert losses.vq(out, batch, commitment=0.25).item() == pytest.approx(1.25 * gap, rel=1e-6)
    assert losses.vq(out, batch, commitment=0.25, ema_decay=0.99).item() == pytest.approx(0.25 * gap, rel=1e-6)

    ema = VectorQuantizedBottleneck(3, 2, codebook_size=4, code_dim=2, ema_decay=0.5)
    ema.train()
    h = torch.randn(64, 3)
    for _ in range(30):  # the same batch again and again: each used code converges to its vectors' mean
        _, _, _, q = ema(h)
    vectors, codes = q.z_e.detach().view(-1, 2), q.codes.view(-1)
    for code in codes.unique():
        assert torch.allclose(ema.codebook[code], vectors[codes == code].mean(0), atol=1e-3)


def test_codebook_perplexity_and_usage():
    assert codebook_use(torch.tensor([5, 5, 5, 5]))["vq/perplexity"] == pytest.approx(4.0)
    assert codebook_use(torch.tensor([9, 0, 0, 0])) == {"vq/perplexity": pytest.approx(1.0), "vq/usage": 0.25}
    p = np.array([1, 2, 3, 0]) / 6
    assert codebook_use(torch.tensor([1, 2, 3, 0]))["vq/perplexity"] == pytest.approx(
        math.exp(-sum(x * math.log(x) for x in p if x > 0)))


def test_rae_regularisers_equal_their_definitions():
    model = AutoEncoder("mlp", SMALL, 3)
    x = torch.rand(8, *SMALL)
    out = model(x)
    batch = Batch(x=x, target=x, model=model)
    assert losses.latent_l2(out, batch).item() == pytest.approx(0.5 * (out.z ** 2).sum(1).mean().item(), rel=1e-6)
    squares = sum((p ** 2).sum().item() for n, p in model.backbone.decoder.named_parameters() if n.endswith("weight"))
    assert losses.decoder_reg(out, batch, decoder_reg="l2").item() == pytest.approx(squares, rel=1e-6)

    # gp: the random-projection estimate averages to ||d x_hat / d z||_F^2, the Jacobian computed in full.
    model.eval()
    z = model.encode(x).z.detach()
    jacobian_norm = np.mean([torch.autograd.functional.jacobian(lambda v: model.decode(v[None])[0], z[i])
                             .pow(2).sum().item() for i in range(len(z))])
    estimates = []
    for seed in range(400):
        torch.manual_seed(seed)
        zi = z.clone().requires_grad_(True)
        out = AEOutput(x_hat=model.decode(zi), z=zi, feature=zi)
        estimates.append(losses.decoder_reg(out, batch, decoder_reg="gp").item())
    assert np.mean(estimates) == pytest.approx(jacobian_norm, rel=0.1)


def test_iwae_bound_with_one_sample_is_the_elbo_and_tightens_with_more():
    model = AutoEncoder("mlp", SMALL, 3, bottleneck="gaussian")
    model.eval()
    x = torch.rand(4, *SMALL)
    code = model.encode(x)
    out = AEOutput(x_hat=model.decode(code.mu), z=code.mu, feature=code.feature, mu=code.mu, logvar=code.logvar)
    batch = Batch(x=x, target=x, model=model)

    # k = 1 with the same noise: -[log p(x|z) + log p(z) - log q(z|x)], written out per pixel here.
    torch.manual_seed(3)
    ours = losses.iwae(out, batch, iwae_samples=1, recon="mse").item()
    torch.manual_seed(3)
    eps = torch.randn(1, *code.mu.shape)
    z = code.mu + torch.exp(0.5 * code.logvar) * eps[0]
    x_hat = model.decode(z)
    log_px = (-(x_hat - x) ** 2 - 0.5 * math.log(math.pi)).flatten(1).sum(1)  # N(x; x_hat, 1/2) per pixel
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    log_qz = torch.distributions.Normal(code.mu, torch.exp(0.5 * code.logvar)).log_prob(z).sum(1)
    assert ours == pytest.approx(-(log_px + log_pz - log_qz).mean().item(), rel=1e-5)

    # E[bound_k] rises with k (Burda et al., theorem 1): averaged over draws, -bound falls.
    def mean_negative_bound(k: int) -> float:
        torch.manual_seed(0)
        return float(np.mean([losses.iwae(out, batch, iwae_samples=k).item() for _ in range(200)]))

    assert mean_negative_bound(50) < mean_negative_bound(5) < mean_negative_bound(1)
