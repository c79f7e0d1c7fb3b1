"""PixelCNN, plain and gated: exact normalisation, samples against exp(log_prob), the
autoregressive property with R, G, B masks, the plain network's blind spot and the gated one's
full view of the past, cached sampling equal to naive sampling, class conditioning, learned
level embeddings (the VQ-VAE prior mode), and a few training steps."""
import pytest
import torch
from torch import nn

import models
from models.layers import channel_groups
from tests.properties import (
    CASES,
    assert_autoregressive,
    assert_class_conditional,
    assert_fast_sampler_matches_naive,
    assert_learns,
    assert_normalised,
    assert_samples_match,
    dependencies,
)

SMALL = dict(hidden_channels=12, num_layers=2, head_channels=12, first_kernel_size=3)
VARIANTS = {"plain": dict(SMALL), "gated": dict(SMALL, gated=True)}


def build(shape, levels, num_classes=None, variant="plain", **hp):
    torch.manual_seed(0)
    model = models.build("pixelcnn", shape, levels, num_classes, **{**VARIANTS[variant], **hp})
    with torch.no_grad():  # class and level embeddings large enough to matter
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                m.weight.normal_(0, 1.0)
    return model


def rank_of(model):
    order = model.order()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape,levels", CASES)
def test_normalised(shape, levels, variant):
    assert_normalised(build(shape, levels, variant=variant))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape,levels", CASES)
def test_samples_match_log_prob(shape, levels, variant):
    assert_samples_match(build(shape, levels, variant=variant), n=20000)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("levels", [2, 4])
def test_autoregressive_with_colour(variant, levels):
    model = build((3, 5, 5), levels, variant=variant, hidden_channels=24, head_channels=24)
    assert_autoregressive(model)


def test_blind_spot_of_plain_and_full_view_of_gated():
    x = torch.rand(8, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    plain = build((3, 5, 5), 2, variant="plain", hidden_channels=24, head_channels=24, first_kernel_size=7)
    gated = build((3, 5, 5), 2, variant="gated", hidden_channels=24, head_channels=24, first_kernel_size=7)
    dep_plain, dep_gated = dependencies(plain, x), dependencies(gated, x)

    def index(c, h, w):
        return c * 25 + h * 5 + w

    # The plain stack's field grows up and to the right by one column per row climbed, so the
    # first pixel of row h never sees the last pixel of row h - 1 (7x7 first layer, width 5).
    for h in range(1, 5):
        for c_out in range(3):
            for c_in in range(3):
                assert not dep_plain[index(c_out, h, 0), index(c_in, h - 1, 4)]
                assert dep_gated[index(c_out, h, 0), index(c_in, h - 1, 4)]
    rank = rank_of(gated)
    past = rank[None, :] < rank[:, None]
    assert torch.equal(dep_gated, past), "the gated PixelCNN must see every previous subpixel"
    assert (past & ~dep_plain).sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape,levels", CASES + [((3, 3, 4), 3)])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_cached_sampling_equals_naive(shape, levels, variant, num_classes):
    assert_fast_sampler_matches_naive(build(shape, levels, num_classes, variant=variant, first_kernel_size=5))


@pytest.mark.parametrize("variant", VARIANTS)
def test_conditional(variant):
    colour = build((3, 5, 5), 2, num_classes=3, variant=variant, hidden_channels=24, head_channels=24)
    assert_class_conditional(build((1, 2, 2), 4, num_classes=3, variant=variant), colour)


@pytest.mark.parametrize("variant", VARIANTS)
def test_level_embeddings(variant):
    model = build((1, 2, 2), 4, variant=variant, embed_levels=True, embed_dim=4)
    assert_normalised(model)
    assert_samples_match(model, n=20000)
    # Autoregressive without gradients: changing subpixels at or after i leaves logits i alone.
    colour = build((3, 3, 3), 5, variant=variant, embed_levels=True, embed_dim=4)
    rank = rank_of(colour)
    x = torch.randint(0, 5, (4, 3, 3, 3)) / 4
    base = colour.logits(x).flatten(2)
    for i in range(27):
        x2 = x.flatten(1).clone()
        future = rank >= rank[i]
        x2[:, future] = torch.randint(0, 5, (4, int(future.sum()))) / 4
        assert torch.equal(colour.logits(x2.view_as(x)).flatten(2)[:, :, i], base[:, :, i])


def test_vq_vae_prior_mode():
    """The configuration a VQ-VAE prior builds: 512 codes on a 7x7 grid, class-conditional."""
    torch.manual_seed(0)
    model = models.build("pixelcnn", (1, 7, 7), levels=512, num_classes=10, gated=True, embed_levels=True)
    codes = torch.randint(0, 512, (4, 1, 7, 7))
    y = torch.tensor([0, 3, 5, 9])
    lp = model.log_prob(codes / 511, y)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    noise = torch.rand(2, 1, 7, 7)
    fast = model.sample(2, y[:2], noise=noise)
    assert torch.equal(fast, model.sample_naive(2, y[:2], noise=noise))
    assert torch.equal(fast * 511, (fast * 511).round())


@pytest.mark.parametrize("hp", [dict(kernel_size=4), dict(first_kernel_size=0), dict(num_layers=-1), dict(hidden_channels=4)])
def test_rejects_bad_hyperparameters(hp):
    with pytest.raises(ValueError):
        models.build("pixelcnn", (3, 8, 8), 2, **hp)


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_decreases(variant):
    torch.manual_seed(0)
    assert_learns(models.build("pixelcnn", (1, 8, 8), 2, **VARIANTS[variant]), n=32, steps=20)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape,hp", [((1, 4, 2), {}), ((1, 4, 4), {"kernel_size": 5, "first_kernel_size": 5})])
def test_tall_images_and_wider_kernels(variant, shape, hp):
    """Normalised, and the cached sampler equals the naive one, for an image taller than wide
    and for 5x5 kernels. Kills the sampler caches sized by the width for the height (a tall
    image overruns them) and the residual blocks' padding k // 3 (equal to k // 2 at k = 3)."""
    model = build(shape, 2, num_classes=3, variant=variant, **hp)
    assert_normalised(model, y=1)
    assert_fast_sampler_matches_naive(model, n=32)


@pytest.mark.parametrize("variant,expected", [("plain", ["stack.blocks.0.cond", "stack.blocks.1.cond", "head.cond"]),
                                              ("gated", [f"stack.layers.{i}.cond_{s}" for i in range(3) for s in "vh"] + ["head.cond"])])
def test_the_label_enters_every_layer(variant, expected):
    """Conditional PixelCNN adds a class bias V^T h in every layer, not only in one: the plain
    network in each residual block and the head, the gated one in both stacks of every layer
    and the head. With every other class embedding zeroed, each alone makes the logits depend
    on the label. Kills any of them built without its class embedding (``cond = None``,
    ``num_classes`` not passed on)."""
    x, zeros, ones = torch.rand(4, 1, 3, 3), torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    names = [n for n, m in build((1, 3, 3), 4, num_classes=3, variant=variant).named_modules() if isinstance(m, nn.Embedding)]
    assert sorted(names) == sorted(expected)
    for name in expected:
        model = build((1, 3, 3), 4, num_classes=3, variant=variant)
        keep = model.get_submodule(name)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Embedding) and m is not keep:
                    m.weight.zero_()
            assert not torch.allclose(model.logits(x, zeros), model.logits(x, ones)), f"{name} ignores the label"


def test_later_gated_layers_read_their_own_colour_and_add_their_input():
    """After the first layer (mask A), the horizontal stack's centre tap is mask B: at a pixel,
    colour group g's pre-activations read group g of the layer's input (and not a later group),
    and the layer adds its input back (the residual). Kills mask A kept after the first layer
    (``include_same`` falsy, ``later & same``) and the residual dropped."""
    model = build((3, 3, 3), 4, variant="gated")
    layer = model.stack.layers[1]
    c = layer.h_out.out_channels
    groups = channel_groups(c, 3)  # the channels in R, G, B thirds
    v, h = torch.randn(1, c, 3, 3), torch.randn(1, c, 3, 3, requires_grad=True)
    pre = layer.h_conv(torch.nn.functional.pad(h, (layer.pad, 0, 0, 0)))[0, :, 1, 1]  # (2c,)
    for out in range(2 * c):
        (grad,) = torch.autograd.grad(pre[out], h, retain_graph=True)
        reads = grad[0, :, 1, 1] != 0
        g = groups[out % c]
        assert reads[groups == g].any(), f"pre-activation {out} (group {g}) does not read its own group"
        assert not reads[groups > g].any(), f"pre-activation {out} (group {g}) reads a later group"
    with torch.no_grad():
        layer.h_out.weight.zero_()
        layer.h_out.bias.zero_()
        assert torch.equal(layer(v, h, None)[1], h), "a later layer does not add its input back"


@pytest.mark.parametrize("shape,hp", [
    ((1, 2, 2), dict(kernel_size=1, first_kernel_size=1)),  # a 1x1 mask-A network: each pixel alone
    ((1, 2, 2), dict(num_layers=0)),
    ((1, 2, 2), dict(hidden_channels=2, head_channels=1)),  # 2 per colour in the plain network
    ((3, 1, 2), dict(hidden_channels=6, head_channels=3)),
    ((3, 1, 2), dict(gated=True, hidden_channels=3, head_channels=3)),  # 1 per colour in the gated one
    ((1, 2, 2), dict(embed_levels=True, embed_dim=1)),
])
def test_the_smallest_valid_hyperparameters_build_and_normalise(shape, hp):
    """The limits of the checks are the model's own: kills each check tightened by one
    (``<= 1`` or ``< 2`` for ``< 1``, ``< 1`` for ``< 0`` layers, ``3 * colors`` or the plain
    minimum for the gated one, ``<=`` for ``<``)."""
    assert_normalised(models.build("pixelcnn", shape, 4, **{**SMALL, **hp}))
