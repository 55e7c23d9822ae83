"""AutoEncoder: one output type, the two bottlenecks, heads on z, embeddings, latent noise, from_config."""

from __future__ import annotations

import math

import pytest
import torch

from aesweep.models.model import AEOutput, AutoEncoder, GaussianBottleneck
from aesweep.spec.trial import ModelConfig
from aesweep.spec.variants import compose

SMALL = (1, 8, 8)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(**kw) -> AutoEncoder:
    return AutoEncoder("mlp", SMALL, 6, **kw)


@pytest.mark.parametrize(
    "backbone,in_shape", [("conv", (3, 32, 32)), ("mlp", (1, 28, 28)), ("resnet", (1, 28, 28))]
)
def test_forward_shapes_all_parts(backbone, in_shape):
    model = AutoEncoder(
        backbone,
        in_shape,
        12,
        width=0.25,
        bottleneck="gaussian",
        heads={"projection", "classifier"},
        num_classes=7,
        projection_dim=5,
    )
    out = model(torch.rand(8, *in_shape))
    assert isinstance(out, AEOutput)
    assert out.x_hat.shape == (8, *in_shape)
    assert out.z.shape == out.mu.shape == out.logvar.shape == (8, 12)
    assert out.feature.shape == (8, model.feature_dim)
    assert out.projection.shape == (8, 5)
    assert out.logits.shape == (8, 7)


def test_deterministic_without_heads_leaves_optional_fields_none():
    out = tiny()(torch.rand(8, *SMALL))
    assert out.mu is None and out.logvar is None and out.projection is None and out.logits is None


def test_heads_read_z():
    model = tiny(heads={"projection", "classifier"}).eval()
    out = model(torch.rand(8, *SMALL))
    assert torch.allclose(out.projection, model.projection(out.z))
    assert torch.allclose(out.logits, model.classifier(out.z))


def test_eval_forward_decodes_z():
    model = AutoEncoder("conv", (3, 16, 16), 4, width=0.125).eval()
    x = torch.rand(8, 3, 16, 16)
    out = model(x)
    assert torch.allclose(out.x_hat, model.decode(out.z))
    assert torch.equal(out.z, model.encode(x).z)


def test_gaussian_eval_gives_mean():
    model = tiny(bottleneck="gaussian").eval()
    x = torch.rand(8, *SMALL)
    a, b = model(x), model(x)
    assert torch.equal(a.z, a.mu) and torch.equal(a.z, b.z)


def test_gaussian_train_samples_with_the_posterior_variance():
    # Zero weights: every row has the same mu = 0.5 and logvar = log(0.09), so z ~ N(0.5, 0.3^2).
    bn = GaussianBottleneck(feature_dim=3, latent_dim=4).train()
    with torch.no_grad():
        bn.linear.weight.zero_()
        bn.linear.bias.copy_(torch.tensor([0.5] * 4 + [math.log(0.09)] * 4))
    z, mu, logvar, _ = bn(torch.randn(20_000, 3))
    assert torch.allclose(mu, torch.full_like(mu, 0.5))
    assert torch.allclose(z.mean(0), torch.full((4,), 0.5), atol=0.01)
    assert torch.allclose(z.std(0), torch.full((4,), 0.3), atol=0.01)
    bn.eval()
    assert torch.equal(bn(torch.randn(5, 3))[0], torch.full((5, 4), 0.5))


def test_gaussian_train_model_standardised_noise_is_standard_normal():
    model = tiny(bottleneck="gaussian").train()
    out = model(torch.rand(512, *SMALL))
    eps = (out.z - out.mu) / torch.exp(0.5 * out.logvar)
    assert not torch.allclose(out.z, out.mu)
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1) < 0.05


def test_embed_contract():
    x = torch.rand(8, *SMALL)
    det = tiny().eval()
    assert torch.equal(det.embed(x), det(x).z)
    emb = det.embed(x, with_feature=True)
    assert emb.shape == (8, 6 + det.feature_dim)
    assert torch.equal(emb[:, 6:], det(x).feature)
    with pytest.raises(ValueError, match="gaussian"):
        det.embed(x, with_logvar=True)

    gauss = tiny(bottleneck="gaussian").train()  # even in training mode the embedding is mu, never a sample
    e1, e2 = gauss.embed(x), gauss.embed(x)
    assert torch.equal(e1, e2)
    code = gauss.encode(x)
    assert torch.equal(e1, code.mu)
    both = gauss.embed(x, with_logvar=True, with_feature=True)
    assert both.shape == (8, 12 + gauss.feature_dim)
    assert torch.equal(both[:, 6:12], code.logvar)


def test_latent_noise_reaches_decoder_in_training_only():
    model = tiny(latent_noise=0.5)
    x = torch.rand(8, *SMALL)
    model.train()
    a, b = model(x), model(x)
    assert torch.equal(a.z, b.z)  # the code itself is clean
    assert not torch.allclose(a.x_hat, b.x_hat)
    assert not torch.allclose(a.x_hat, model.decode(a.z))
    model.eval()
    c = model(x)
    assert torch.equal(c.x_hat, model.decode(c.z))
    # Without latent noise a training-mode forward is deterministic for a deterministic bottleneck.
    plain = tiny().train()
    assert torch.equal(plain(x).x_hat, plain(x).x_hat)


def test_gradients_reach_the_encoder_from_every_output():
    model = tiny(bottleneck="gaussian", heads={"projection", "classifier"})
    first = next(model.backbone.encoder.parameters())
    for field in ("x_hat", "z", "mu", "logvar", "projection", "logits"):
        model.zero_grad()
        getattr(model(torch.rand(8, *SMALL)), field).square().sum().backward()
        assert first.grad is not None and first.grad.abs().sum() > 0, field


def test_from_config_follows_the_objective():
    cfg = ModelConfig(backbone="mlp", latent_dim=5, width=0.5, depth=3, projection_dim=9)
    contrastive = AutoEncoder.from_config(cfg, compose("contrastive", {}), SMALL, num_classes=4)
    assert contrastive.projection is not None and contrastive.classifier is None
    assert not contrastive.gaussian and contrastive.latent_dim == 5
    assert contrastive(torch.rand(8, *SMALL)).projection.shape == (8, 9)
    assert sum(isinstance(m, torch.nn.Linear) for m in contrastive.backbone.encoder.modules()) == 2  # depth 3

    vae_cls = AutoEncoder.from_config(cfg, compose("vae+classifier", {}), SMALL, num_classes=4)
    assert vae_cls.gaussian and vae_cls.projection is None
    assert vae_cls(torch.rand(8, *SMALL)).logits.shape == (8, 4)

    assert AutoEncoder.from_config(cfg, compose("mmd", {"latent_noise": 0.2}), SMALL).latent_noise == 0.2
    assert AutoEncoder.from_config(cfg, compose("ae", {}), SMALL).latent_noise == 0.0


def test_unknown_names_fail_with_known_ones():
    with pytest.raises(ValueError, match="deterministic, gaussian"):
        tiny(bottleneck="vq")
    with pytest.raises(ValueError, match="projection, classifier"):
        tiny(heads={"decoder2"})


# Study 003's tables ("Nbres of Params", Tables 6-8): (model, n_layers, D_x) -> count, D_z = 2. The second
# column of those tables is the FreyFace one (D_x = 560).
STUDY_003_PARAMS = [
    ("ae", 3, (1, 28, 28), 1_100_668),
    ("vae", 4, (1, 28, 28), 1_546_470),
    ("ae", 3, (1, 28, 20), 561_942),
    ("ae", 1, (1, 28, 28), 3_922),
]


@pytest.mark.parametrize("variant,layers,in_shape,expected", STUDY_003_PARAMS)
def test_parameter_counts_match_study_003(variant, layers, in_shape, expected):
    cfg = ModelConfig(backbone="mlp", latent_dim=2, depth=layers)
    model = AutoEncoder.from_config(cfg, compose(variant, {}), in_shape)
    counts = model.parameter_counts()
    assert counts["model/params"] == expected
    assert counts["model/params/encoder"] + counts["model/params/decoder"] == expected


def test_parameter_counts_split_encoder_decoder_heads():
    model = AutoEncoder("mlp", SMALL, 6, heads={"classifier"}, num_classes=3)
    counts = model.parameter_counts()
    enc = sum(p.numel() for p in [*model.backbone.encoder.parameters(), *model.bottleneck.parameters()])
    assert counts["model/params/encoder"] == enc
    assert counts["model/params/decoder"] == sum(p.numel() for p in model.backbone.decoder.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())
    assert counts["model/params"] == enc + counts["model/params/decoder"] + head


def test_classifier_head_with_hidden_layers_and_dropout():
    # 001: 128 -> 64 -> 10 with a ReLU (and dropout); 004: three FC layers with BN, ReLU and dropout.
    cfg = ModelConfig(backbone="mlp", latent_dim=128, widths=[32], head_widths=[64], head_dropout=0.5)
    model = AutoEncoder.from_config(cfg, compose("classifier", {}), SMALL, num_classes=10)
    linears = [(m.in_features, m.out_features) for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert linears == [(128, 64), (64, 10)]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.classifier)
    deep = AutoEncoder.from_config(cfg.model_copy(update={"head_widths": [64, 32], "head_batchnorm": True}),
                                   compose("classifier", {}), SMALL, num_classes=10)
    assert sum(isinstance(m, torch.nn.Linear) for m in deep.classifier) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in deep.classifier) == 2
    x = torch.rand(8, *SMALL)
    model.eval()
    assert torch.equal(model.classify(x), model(x).logits)  # dropout off in eval: one answer
    assert torch.equal(model.classify(x), model.classify(x))
    model.train()
    assert not torch.equal(model.classify(x), model.classify(x))


def test_skip_backbone_embeds_z_only():
    cfg = ModelConfig(backbone="conv", latent_dim=4, width=0.125, skip_connections=True)
    model = AutoEncoder.from_config(cfg, compose("ae", {}), (1, 28, 28)).eval()
    x = torch.rand(3, 1, 28, 28)
    code = model.encode(x)
    assert len(code.maps) == 3 and model.embed(x).shape == (3, 4)
    assert torch.equal(model.embed(x), code.z)
    assert torch.equal(model(x).x_hat, model.decode(code.z, code.maps))
