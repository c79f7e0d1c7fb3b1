"""Soft labels: every conditional model takes class weights (n, K) (or (K,)) wherever it takes
integer labels, mixes what the class conditions, and weight 1 on class k gives exactly label k
(the same logits, the same samples from the same noise)."""
import pytest
import torch
import torch.nn.functional as F

import models
from tests.properties import TINY_HPARAMS, tiny_autoregressive

K = 3
AUTOREGRESSIVE = list(TINY_HPARAMS) + ["ar", "pixelcnn_mixture"]


def build(kind):
    if kind == "ar":
        return tiny_ar()
    if kind == "pixelcnn_mixture":
        return tiny_autoregressive("pixelcnn", (3, 2, 2), 4, K, std=0.5, output="logistic_mixture", mixtures=2)
    return tiny_autoregressive(kind, (3, 2, 2), 4, K, std=0.5)


def tiny_ar():
    torch.manual_seed(0)
    model = models.build("ar", (3, 2, 2), 4, K, p=3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


@pytest.mark.parametrize("kind", AUTOREGRESSIVE)
def test_weight_one_on_a_class_is_that_label(kind):
    model = build(kind)
    x = torch.randint(0, 4, (6, *model.image_shape)).float() / 3
    noise = torch.rand(6, *model.image_shape)
    with torch.no_grad():
        for k in range(K):
            label = torch.full((6,), k)
            weights = F.one_hot(label, K).float()
            assert torch.equal(model.logits(x, weights), model.logits(x, label))
            assert torch.equal(model.log_prob(x, weights), model.log_prob(x, label))
            assert torch.equal(model.sample(6, weights, noise=noise), model.sample(6, label, noise=noise))
            assert torch.equal(model.sample(6, weights[0], noise=noise), model.sample(6, k, noise=noise))
        half = torch.tensor([0.5, 0.5, 0.0])
        mixed = model.logits(x, half.expand(6, K))
        assert not torch.equal(mixed, model.logits(x, torch.zeros(6, dtype=torch.long)))
        assert not torch.equal(mixed, model.logits(x, torch.ones(6, dtype=torch.long)))


@pytest.mark.parametrize("kind", ["made", "pixelcnn"])
def test_soft_labels_stay_normalised(kind):
    """A mixture of classes is still a distribution (the model is exact for any weights)."""
    from tests.properties import all_images

    model = tiny_autoregressive(kind, (1, 2, 2), 4, K, std=0.5)
    x = all_images(model.image_shape, 4)
    w = torch.tensor([0.3, 0.0, 0.7]).expand(len(x), K)
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob(x, w).double(), 0).exp().item()
    assert abs(total - 1) < 1e-4


def test_cvae_weight_one_is_the_one_hot():
    torch.manual_seed(0)
    model = models.build("cvae", (1, 8, 8), 2, K, latent_dim=3, channels=4, hidden=16).eval()
    z = torch.randn(5, 3)
    x = torch.rand(5, 1, 8, 8)
    for k in range(K):
        label, weights = torch.full((5,), k), F.one_hot(torch.full((5,), k), K).float()
        assert torch.equal(model.decode(z, weights), model.decode(z, label))
        assert torch.equal(model.sample(5, weights, z=z, mean=True), model.sample(5, label, z=z, mean=True))
        assert all(torch.equal(a, b) for a, b in zip(model.encode(x, weights), model.encode(x, label)))
    mixed = model.decode(z, torch.tensor([0.5, 0.5, 0.0]))
    assert not torch.equal(mixed, model.decode(z, torch.zeros(5, dtype=torch.long)))


def test_vqvae_prior_weight_one_is_the_label():
    torch.manual_seed(0)
    vq = models.build("vqvae", (1, 8, 8), 2, num_codes=6, code_dim=4, channels=8, res_channels=4, res_blocks=1)
    model = models.build("vqvae_prior", (1, 8, 8), 2, K, vqvae=vq, hidden_channels=8, num_layers=1,
                         head_channels=8, first_kernel_size=3).eval()
    noise = torch.rand(4, 1, *model.code_shape)
    for k in range(K):
        weights = F.one_hot(torch.full((4,), k), K).float()
        assert torch.equal(model.sample_codes(4, weights, noise=noise), model.sample_codes(4, k, noise=noise))


def test_bad_soft_labels_are_refused():
    model = tiny_autoregressive("fvsbn", (1, 2, 2), 2, K)
    x = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match="soft labels"):
        model.log_prob(x, torch.ones(4, K + 1))
    with pytest.raises(ValueError, match="soft labels"):
        model.sample(4, torch.ones(3, K))
    with pytest.raises(ValueError, match="finite"):
        model.sample(4, torch.tensor([float("nan"), 0.0, 1.0]))


@pytest.mark.parametrize("kind", ["made", "pixelcnn"])
def test_soft_labels_of_any_float_dtype(kind):
    """Class weights in float64 (as numpy hands them over) or bfloat16 give the logits of the
    same weights in float32. Kills the weights' cast to the model's dtype dropped from
    ``class_weights`` (MADE) and ``ClassEmbedding`` (PixelCNN)."""
    model = build(kind)
    x = torch.randint(0, 4, (2, *model.image_shape)).float() / 3
    w = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.0, 0.5]])  # exact in bfloat16
    with torch.no_grad():
        for dtype in (torch.float64, torch.bfloat16):
            assert torch.equal(model.logits(x, w.to(dtype)), model.logits(x, w))
