"""workbench.sampling on small models: reconstructions that beat random pairs, interpolations
that end in the two reconstructions, temperature and class weights that reach the sampler,
progress frames that end in the draw, code grids, the checks of bad combinations, and the
test images the trainer scores."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import models
from workbench import sampling
from workbench.config import load_config
from workbench.data import load_data
from workbench.errors import UserError
from workbench.images import pick_frames, save_gif, save_strip
from workbench.runs import Run


def squares(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary 28x28 images of one class-dependent square each (like the test fixture's data)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.zeros(n, 1, 28, 28)
    for i, k in enumerate(y.tolist()):
        r, c = divmod(k, 5)
        x[i, 0, 4 + 10 * r: 12 + 10 * r, 2 + 5 * c: 6 + 5 * c] = 1.0
    return x, y


def build(name, shape=(1, 28, 28), levels=2, num_classes=None, **hp):
    torch.manual_seed(0)
    return models.build(name, shape, levels, num_classes, **hp).eval()


@pytest.fixture(scope="module")
def trained_vae():
    """An MLP VAE fitted for a few hundred steps to the ten square images."""
    torch.manual_seed(0)
    model = models.build("vae", (1, 28, 28), 2, latent_dim=4, arch="mlp", hidden=64)
    x, _ = squares(100)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(250):
        batch = x[(torch.arange(25) + 25 * step) % 100]
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_reconstructions_of_a_trained_vae_beat_random_pairs(trained_vae):
    x, y = squares(40, seed=1)
    both = sampling.reconstruct(trained_vae, x)
    assert both.shape == (80, 1, 28, 28) and torch.equal(both[:40], x)
    recon = both[40:]
    own = (recon - x).pow(2).flatten(1).mean(1)
    other = (recon - x[torch.roll(torch.arange(40), 1)]).pow(2).flatten(1).mean(1)
    differs = y != torch.roll(y, 1)
    assert own.mean() < 0.5 * other[differs].mean()
    assert (own < 0.02).float().mean() > 0.8  # most squares come back nearly exactly


def _ends(rows, steps):
    rows = rows.view(-1, steps, *rows.shape[1:])
    return rows[:, 0], rows[:, -1], rows[:, steps // 2]


@pytest.mark.parametrize("slerp", [False, True])
def test_interpolation_ends_are_the_reconstructions_vae(trained_vae, slerp):
    x, _ = squares(6, seed=2)
    rows = sampling.interpolate(trained_vae, x[:3], x[3:], 7, slerp=slerp)
    assert rows.shape == (21, 1, 28, 28)
    recon = sampling.reconstruct(trained_vae, x)[6:]
    first, last, middle = _ends(rows, 7)
    torch.testing.assert_close(first, recon[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, recon[3:], atol=1e-5, rtol=0)
    assert (middle - first).abs().amax() > 1e-2 and (middle - last).abs().amax() > 1e-2


def test_interpolation_ends_are_the_reconstructions_cvae_with_walking_labels():
    model = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=32)
    x, y = squares(6, seed=3)
    y[3:] = (y[:3] + 1) % 10  # every pair changes class: the label walks as class weights
    rows = sampling.interpolate(model, x[:3], x[3:], 5, y=(y[:3], y[3:]))
    recon = sampling.reconstruct(model, x, y)[6:]
    first, last, _ = _ends(rows, 5)
    torch.testing.assert_close(first, recon[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, recon[3:], atol=1e-5, rtol=0)
    with pytest.raises(UserError):
        sampling.interpolate(model, x[:3], x[3:], 5)  # a CVAE needs the labels


def test_interpolation_ends_are_the_reconstructions_vqvae():
    model = build("vqvae", num_codes=16, code_dim=4, channels=8, res_channels=4, res_blocks=1).train()
    x, _ = squares(6, seed=4)
    model.loss(x)  # k-means initialisation: the codes differ between images
    model.eval()
    rows = sampling.interpolate(model, x[:3], x[3:], 4)
    recon = sampling.reconstruct(model, x)[6:]
    first, last, _ = _ends(rows, 4)
    torch.testing.assert_close(first, recon[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, recon[3:], atol=1e-5, rtol=0)
    assert not torch.allclose(recon[0], recon[3])
    with pytest.raises(UserError):
        sampling.interpolate(model, x[:3], x[3:], 4, slerp=True)


def test_temperature_reaches_the_sampler():
    made = build("made", (1, 4, 4), hidden=[16])
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 0.5)
    # T -> 0 is greedy: the noise no longer matters; T = 1 is today's sampler from the same uniforms
    cold = [sampling.draw(made, 32, temperature=1e-9, seed=s) for s in (0, 1)]
    assert torch.equal(cold[0], cold[1]) and torch.equal(cold[0][0].expand_as(cold[0]), cold[0])
    warm = sampling.draw(made, 32, seed=0)
    noise = torch.rand((32, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(warm, made.sample(32, noise=noise)) and not torch.equal(warm, cold[0])
    vae = build("vae", latent_dim=4, arch="mlp", hidden=32)  # T scales the prior's std: T -> 0 decodes z = 0
    a, b = (sampling.draw(vae, 4, temperature=1e-6, mean=True, seed=s) for s in (0, 1))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0], vae.decode(torch.zeros(1, 4))[0], atol=1e-5, rtol=0)
    assert not torch.allclose(sampling.draw(vae, 4, mean=True, seed=0), a)


def test_draws_are_reproducible_in_any_batch_size():
    made = build("made", (1, 4, 4), num_classes=3, hidden=[16])
    one = sampling.draw(made, 10, seed=5)
    assert torch.equal(one, sampling.draw(made, 10, seed=5, batch_size=3))
    assert not torch.equal(one, sampling.draw(made, 10, seed=6))
    # the seed and the label reach a CVAE's sampler: its means are the decoder's at the seed's z
    # and that label (kills a draw that ignores either)
    vae = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=32)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    drawn = sampling.draw(vae, 5, seed=1, label=2, mean=True)
    torch.testing.assert_close(drawn, vae.decode(z, torch.full((5,), 2)), atol=1e-5, rtol=0)
    assert not torch.allclose(drawn, sampling.draw(vae, 5, seed=1, label=3, mean=True), atol=1e-4)


def test_weight_one_mixture_is_the_label_and_a_mixture_differs():
    made = build("made", (1, 4, 4), num_classes=3, hidden=[16])
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 1.0)
    label = sampling.draw(made, 64, label=2, seed=0)
    assert torch.equal(sampling.draw(made, 64, label=sampling.soft_label(3, {2: 1.0}), seed=0), label)
    mixed = sampling.draw(made, 64, label=sampling.soft_label(3, {0: 0.5, 2: 0.5}), seed=0)
    assert not torch.equal(mixed, label)


def test_progress_ends_in_the_draw_and_fills_in_generation_order():
    made = build("made", (1, 4, 4), num_classes=3, hidden=[16])
    frames = list(sampling.progress(made, 6, every=5, label=1, temperature=0.7, seed=2))
    assert [d for d, _ in frames] == [5, 10, 15, 16]
    assert torch.equal(frames[-1][1], sampling.draw(made, 6, label=1, temperature=0.7, seed=2))
    order = made.order()
    for done, x in frames:
        later = order[done:]
        assert (x.flatten(1)[:, later] == 0).all()
    prior = build("vqvae_prior", vqvae=build("vqvae", num_codes=8, code_dim=4, channels=8, res_channels=4, res_blocks=1),
                  hidden_channels=8, num_layers=2, head_channels=8)
    frames = list(sampling.progress(prior, 2, every=16, seed=3))
    assert [d for d, _ in frames] == [16, 32, 48, 49] and frames[-1][1].shape == (2, 1, 28, 28)
    # the prior's frames are the decoder's means of the codes so far: the last is the mean draw
    # from the same seed, not the plain draw (which samples p(x | codes) on top)
    assert torch.equal(frames[-1][1], sampling.draw(prior, 2, mean=True, seed=3))
    assert not torch.equal(frames[-1][1], sampling.draw(prior, 2, seed=3))


def test_class_sweep_shares_the_randomness_across_classes():
    made = build("made", (1, 4, 4), num_classes=3, hidden=[16])
    sweep = sampling.class_sweep(made, 2, seed=4)
    assert sweep.shape == (6, 1, 4, 4)
    for k in range(3):  # row 0 used the first uniforms of the seed's stream, as draw does
        assert torch.equal(sweep[k], sampling.draw(made, 1, label=k, seed=4)[0])
    cvae = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=32)
    sweep = sampling.class_sweep(cvae, 2, seed=0, mean=True)
    assert sweep.shape == (20, 1, 28, 28)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sweep[10:], cvae.decode(z[1:].expand(10, 4), torch.arange(10)), atol=1e-5, rtol=0)
    with pytest.raises(UserError):
        sampling.class_sweep(build("vae", latent_dim=4, arch="mlp", hidden=32), 2)


def test_code_grid_shows_codes_beside_their_decoded_images():
    vq = build("vqvae", num_codes=16, code_dim=4, channels=8, res_channels=4, res_blocks=1).train()
    x, _ = squares(5, seed=5)
    vq.loss(x)
    vq.eval()
    grid = sampling.code_grid(vq, x, usage_x=torch.cat([x, x]))
    assert grid.codes.shape == (5, 7, 7) and torch.equal(grid.codes, vq.encode_codes(x))
    assert grid.images.shape == (5, 1, 28, 28) and grid.picture.shape == (10, 3, 28, 28)
    torch.testing.assert_close(grid.picture[1::2], grid.images.expand(-1, 3, -1, -1))
    colours = sampling.palette(16)[grid.codes]  # (5, 7, 7, 3): each code its colour, 4x4 pixels per code
    torch.testing.assert_close(grid.picture[0::2, :, ::4, ::4], colours.permute(0, 3, 1, 2))
    assert torch.equal(grid.usage, 2 * torch.bincount(grid.codes.flatten(), minlength=16))
    assert grid.used == grid.codes.unique().numel()
    assert sampling.usage_picture(grid.usage).shape == (3, 48, 32)
    prior = build("vqvae_prior", num_classes=10, vqvae=vq, hidden_channels=8, num_layers=2, head_channels=8)
    torch.testing.assert_close(sampling.reconstruct(prior, x), sampling.reconstruct(vq, x))  # through its VQ-VAE
    drawn = sampling.code_grid(prior, n=3, label=4, temperature=0.5, seed=1)
    assert drawn.codes.shape == (3, 7, 7) and drawn.usage.sum() == 3 * 49
    torch.testing.assert_close(drawn.images, sampling.draw(prior, 3, label=4, temperature=0.5, mean=True, seed=1))


@pytest.mark.parametrize("name, op, kwargs, words", [
    ("made", "interpolate", {}, "needs a model with an encoder"),
    ("made", "recon", {}, "needs a model with an encoder"),
    ("vae", "progress", {}, "autoregressive"),
    ("made", "codes", {}, "VQ-VAE"),
    ("made", "samples", {"temperature": 0}, "positive"),
    ("made", "samples", {"temperature": -1.0}, "positive"),
    ("made", "samples", {"temperature": float("nan")}, "positive"),
    ("vqvae", "samples", {"temperature": 0.5}, "no temperature"),
    ("vae", "recon", {"temperature": 0.5}, "drawn samples"),
    ("made", "samples", {"mean": True}, "latent model"),
    ("made", "samples", {"mix": {3: 1.0}}, "not class-conditional"),
    ("made", "samples", {"label": 1}, "not class-conditional"),
    ("made_c", "samples", {"label": 1, "mix": {3: 1.0}}, "not both"),
    ("made_c", "samples", {"label": 3}, "out of range"),
    ("made_c", "samples", {"label": -1}, "out of range"),
    ("made_c", "samples", {"mix": {5: 1.0}}, "out of range"),
    ("made_c", "classes", {"label": 1}, "every class"),
    ("made", "classes", {}, "class-conditional"),
    ("made", "paint", {}, "unknown mode"),
])
def test_check_rejects_bad_combinations(name, op, kwargs, words):
    model = build("made", (1, 2, 2), num_classes=3 if name == "made_c" else None, hidden=[8]) if name.startswith("made") \
        else build(name, latent_dim=2, arch="mlp", hidden=8) if name == "vae" \
        else build(name, num_codes=4, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    with pytest.raises(UserError) as e:
        sampling.check(model, op, **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_check_accepts_what_the_modes_offer():
    made = build("made", (1, 2, 2), num_classes=3, hidden=[8])
    for op in ("samples", "classes", "progress"):
        sampling.check(made, op, temperature=0.5)
    sampling.check(made, "samples", mix={0: 1, 2: 3})
    sampling.check(made, "progress", label=2)


def test_parse_mix_and_soft_label():
    assert sampling.parse_mix("3:0.5, 7:1.5") == {3: 0.5, 7: 1.5} and sampling.parse_mix("3,7") == {3: 1.0, 7: 1.0}
    torch.testing.assert_close(sampling.soft_label(10, {3: 1, 7: 3}), torch.eye(10)[3] * 0.25 + torch.eye(10)[7] * 0.75)
    for bad in ["", "3:", "x:1", "3:a", "3:-1", "3:0,4:0", "3:1,3:2", "3:inf"]:
        with pytest.raises(UserError):
            sampling.parse_mix(bad)


def test_test_images_are_the_trainers_test_split(tiny_preset):
    config = load_config(tiny_preset)
    splits = load_data(config.data)  # dynamic binarisation: the same draw as the trainer's test NLL
    x, y = sampling.test_images(Run(tiny_preset.parent, config), 7, seed=1)
    pick = torch.randperm(len(splits.test_x), generator=torch.Generator().manual_seed(1))[:7]
    assert torch.equal(x, splits.test_x[pick]) and torch.equal(y, splits.test_y[pick])
    with pytest.raises(UserError):
        sampling.test_images(Run(tiny_preset.parent, config), 61)


def test_progress_pictures(tmp_path):
    frames = [torch.full((3, 1, 4, 4), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert pick_frames(frames, 3) == [frames[0], frames[2], frames[4]]
    strip = Image.open(save_strip(frames, tmp_path / "p.png", scale=2))
    assert strip.size == (2 * (5 * 5 + 1), 2 * (3 * 5 + 1))
    gif = Image.open(save_gif(frames, tmp_path / "p.gif", scale=3))
    assert gif.n_frames == 5 and gif.info["loop"] == 0
    gif.seek(4)
    assert np.asarray(gif.convert("L"))[3 * 1 + 1, 3 * 1 + 1] == 255


def test_perplexity_and_used_codes_of_a_hand_made_histogram():
    """Kills a perplexity that is not exp(entropy) of the usage (e.g. of the codes instead of
    usage, or with log2), and a count of used codes that counts zeros: counts (2, 2, 4, 0...) give
    p = (1/4, 1/4, 1/2), entropy 1.5 ln 2, perplexity 2 sqrt 2, 3 codes used."""
    usage = torch.zeros(8, dtype=torch.long)
    usage[[1, 4, 6]] = torch.tensor([2, 2, 4])
    grid = sampling.CodeGrid(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 1, 4, 4), usage, torch.zeros(2, 3, 4, 4))
    assert grid.used == 3
    assert abs(grid.perplexity - 2 * 2 ** 0.5) < 1e-6


def _slerp(a, b, t):
    return sampling._path(a[None], b[None], torch.tensor(t, dtype=a.dtype), True)[0]


def test_slerp_at_a_quarter_is_the_formula():
    """Kills swapped slerp terms (sin(tW) a + sin((1-t)W) b) and a plain lerp for slerp: at t = 1/4
    the point is sin(3W/4)/sin W a + sin(W/4)/sin W b, computed here in float64."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64) * 2
    omega = torch.acos(torch.dot(a, b) / (a.norm() * b.norm()))
    expected = (torch.sin(0.75 * omega) * a + torch.sin(0.25 * omega) * b) / torch.sin(omega)
    points = _slerp(a, b, [0.0, 0.25, 1.0])
    torch.testing.assert_close(points[1], expected, atol=1e-12, rtol=0)
    assert (points[1] - (0.75 * a + 0.25 * b)).norm() > 1e-2  # not the line
    assert torch.equal(points[0], a) and torch.equal(points[2], b)


def test_slerp_between_opposite_vectors_keeps_off_the_origin():
    """Kills the fall-back to the straight line between opposite vectors (which passes through 0,
    where a VAE decodes its prior's mode whatever the two images were): the path keeps the norm
    of equal-norm ends, its midpoint is orthogonal to both, and unequal norms change linearly."""
    a = torch.tensor([[3.0, -1.0, 2.0, 0.5]])
    t = torch.linspace(0, 1, 9)
    path = sampling._path(a, -a, t, True)[0]
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(9), atol=1e-5, rtol=0)
    assert abs(float(path[4] @ a[0])) < 1e-4
    assert torch.equal(path[0], a[0]) and torch.equal(path[-1], -a[0])
    steps = (path[1:] - path[:-1]).norm(dim=1)  # a circle at constant speed
    torch.testing.assert_close(steps, steps[:1].expand(8), atol=1e-4, rtol=0)
    longer = sampling._path(a, -2 * a, t, True)[0]
    torch.testing.assert_close(longer.norm(dim=1), a.norm() * (1 + t), atol=1e-5, rtol=0)


def test_walking_cvae_labels_pass_through_the_class_weights_in_order():
    """Kills walking labels reversed (from yb to ya), which the overwritten ends cannot show: every
    frame j is the decoder at the line's z_j with weights (1 - t_j) onehot(ya) + t_j onehot(yb)."""
    model = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    x, _ = squares(4, seed=3)
    ya, yb = torch.tensor([1, 4]), torch.tensor([7, 2])
    steps = 5
    rows = sampling.interpolate(model, x[:2], x[2:], steps, y=(ya, yb))
    t = torch.linspace(0, 1, steps)
    with torch.no_grad():
        za, zb = model.encode(x[:2], ya)[0], model.encode(x[2:], yb)[0]
        for i in range(2):
            z = (1 - t)[:, None] * za[i] + t[:, None] * zb[i]
            w = (1 - t)[:, None] * torch.eye(10)[ya[i]] + t[:, None] * torch.eye(10)[yb[i]]
            expected = model.decode(z, w, mean=True)
            torch.testing.assert_close(rows[i * steps:(i + 1) * steps], expected, atol=1e-5, rtol=0)
        backwards = (1 - t)[:, None] * torch.eye(10)[yb[0]] + t[:, None] * torch.eye(10)[ya[0]]
        reversed_labels = model.decode((1 - t)[:, None] * za[0] + t[:, None] * zb[0], backwards, mean=True)
    assert (rows[1:steps - 1] - reversed_labels[1:-1]).abs().amax() > 1e-3  # the test can tell


def test_class_sweeps_honour_the_temperature():
    """Kills a class sweep that drops the temperature: a CVAE row decodes T z (z from the seed),
    and a MADE row at T is draw(label=k, temperature=T)."""
    cvae = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=32)
    sweep = sampling.class_sweep(cvae, 2, seed=0, temperature=0.3, mean=True)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sweep[:10], cvae.decode(0.3 * z[:1].expand(10, 4), torch.arange(10)), atol=1e-5, rtol=0)
    assert not torch.allclose(sweep[:10], cvae.decode(z[:1].expand(10, 4), torch.arange(10)), atol=1e-3)
    made = build("made", (1, 4, 4), num_classes=3, hidden=[16])
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 1.0)
    sweep = sampling.class_sweep(made, 1, seed=4, temperature=0.3)
    for k in range(3):
        assert torch.equal(sweep[k], sampling.draw(made, 1, label=k, temperature=0.3, seed=4)[0])


def test_made_class_sweep_shares_one_mask_set_per_row():
    """Kills a class sweep that lets each image of a row draw its own MADE mask set (its classes
    would be generated in different orders): with the label's weights at zero, the classes of a
    row are identical, and rows still use more than one mask set."""
    made = build("made", (1, 3, 3), num_classes=4, hidden=[32], num_masks=4)
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 1.0)
        made.label_proj.weight.zero_()  # the label no longer matters: only order and noise do
    rows = sampling.class_sweep(made, 12, seed=0).view(12, 4, 9)
    assert all(torch.equal(r[0], r[k]) for r in rows for k in range(1, 4))
    # the same uniforms with each image's own mask set differ within a row: the test can tell
    noise = torch.rand(12, 1, 1, 3, 3, generator=torch.Generator().manual_seed(1)).repeat_interleave(4, 0).view(48, 1, 3, 3)
    torch.manual_seed(0)
    free = made.sample(48, y=torch.arange(4).repeat(12), noise=noise).view(12, 4, 9)
    assert any(not torch.equal(r[0], r[k]) for r in free for k in range(1, 4))


def _random_made(shape=(1, 3, 3), num_classes=3, **hp):
    made = build("made", shape, num_classes=num_classes, hidden=[16], **hp)
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 1.0)
    return made


def test_batches_continue_the_classes_in_turn():
    """Kills a batch's labels counted from 0 instead of its first image (``arange(start, ...)``
    -> ``arange(0, ...)`` or an off-by-one), which batches of a multiple of K cannot show: with
    batches of 4 and 3 classes, image i is the draw for class i mod 3 from its own uniforms."""
    made = _random_made()
    one = sampling.draw(made, 10, seed=2)
    assert torch.equal(sampling.draw(made, 10, seed=2, batch_size=4), one)
    by_class = torch.stack([sampling.draw(made, 10, label=k, seed=2) for k in range(3)])
    assert torch.equal(one, by_class[torch.arange(10) % 3, torch.arange(10)])
    assert not torch.equal(by_class[0], by_class[1])  # the label matters: the test can tell


def test_reconstructions_are_the_decoder_means_at_the_posterior_means():
    """Kills ``mean=True`` -> ``False`` as reconstruct's default (a Bernoulli draw per pixel, noise
    on an untrained VAE) and the posterior's log-variance (or a sample) decoded instead of its
    mean; batches give the same images."""
    vae = build("vae", latent_dim=4, arch="mlp", hidden=32)
    x, _ = squares(5, seed=6)
    both = sampling.reconstruct(vae, x)
    with torch.no_grad():
        expected = vae.decode(vae.encode(x)[0], mean=True)
    torch.testing.assert_close(both[5:], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(sampling.reconstruct(vae, x, batch_size=2), both, atol=1e-6, rtol=0)
    drawn = sampling.reconstruct(vae, x, mean=False)[5:]
    assert ((drawn == 0) | (drawn == 1)).all() and not torch.allclose(drawn, expected, atol=0.1)


def test_interpolation_and_class_sweep_in_small_batches_equal_one_batch():
    """Kills the batch arithmetic of interpolate and class_sweep (pairs or rows per call, the
    slices of a later batch, the VQ-VAE's loop stopped after its first batch): a batch size that
    splits the pairs and rows gives the same images."""
    vae = build("vae", latent_dim=4, arch="mlp", hidden=32)
    x, _ = squares(6, seed=7)
    for slerp in (False, True):
        whole = sampling.interpolate(vae, x[:3], x[3:], 5, slerp=slerp)
        torch.testing.assert_close(sampling.interpolate(vae, x[:3], x[3:], 5, slerp=slerp, batch_size=6), whole,
                                   atol=1e-6, rtol=0)
    vq = build("vqvae", num_codes=16, code_dim=4, channels=8, res_channels=4, res_blocks=1)
    whole = sampling.interpolate(vq, x[:3], x[3:], 4)
    torch.testing.assert_close(sampling.interpolate(vq, x[:3], x[3:], 4, batch_size=4), whole, atol=1e-6, rtol=0)
    made = _random_made()
    whole = sampling.class_sweep(made, 5, seed=3, temperature=0.8)
    assert torch.equal(sampling.class_sweep(made, 5, seed=3, temperature=0.8, batch_size=4), whole)


def test_counts_at_their_limits():
    """Kills off-by-one mutants of the count checks: 1 and MAX_IMAGES images are allowed, 0 and
    MAX_IMAGES + 1 are not; progress takes 1 to MAX_PROGRESS images and a frame every 1 subpixel."""
    sampling._check_count(1)
    sampling._check_count(sampling.MAX_IMAGES)
    for bad in (0, -1, sampling.MAX_IMAGES + 1, 2.0):
        with pytest.raises(UserError):
            sampling._check_count(bad)
    made = build("made", (1, 2, 2), hidden=[8])
    assert [d for d, _ in sampling.progress(made, 1, every=1)] == [1, 2, 3, 4]
    assert len(list(sampling.progress(made, sampling.MAX_PROGRESS, every=4))[-1][1]) == sampling.MAX_PROGRESS
    for n, every in ((0, 1), (sampling.MAX_PROGRESS + 1, 1), (1, 0), (1, 1.5)):
        with pytest.raises(UserError):
            list(sampling.progress(made, n, every=every))


def test_palette_is_the_documented_hsv_sequence():
    """Kills mutants of the HSV-to-RGB table (a sector's channels swapped or repeated) and of the
    saturation and brightness cycles: colour i is hsv_to_rgb(i phi mod 1, 0.85 or 0.55 by parity,
    (1, 0.8, 0.6)[i mod 3]); neighbouring codes differ visibly."""
    import colorsys

    got = sampling.palette(30)
    phi = (5 ** 0.5 - 1) / 2
    for i in range(30):
        rgb = colorsys.hsv_to_rgb((i * phi) % 1.0, 0.85 if i % 2 == 0 else 0.55, (1.0, 0.8, 0.6)[i % 3])
        torch.testing.assert_close(got[i], torch.tensor(rgb, dtype=torch.float32), atol=1e-6, rtol=0)
    assert (got[1:] - got[:-1]).abs().amax(1).min() > 0.1


def test_code_colours_and_usage_picture():
    """Kills code 0 shown black like an undrawn code (``idx < 0`` -> ``idx <= 0``), a wrong scaling
    of the code grid, and usage bars not proportional to the counts (or filled from the top): with
    counts (0, 2, 4, 1) and height 8, the bars are 0, 4, 8 and 2 pixels high from the bottom."""
    pal = sampling.palette(3)
    out = sampling.colour_codes(torch.tensor([[[-1, 0], [1, 2]]]), 3, size=(4, 4))
    assert out.shape == (1, 3, 4, 4)
    assert torch.equal(out[0, :, :2, :2], torch.zeros(3, 2, 2))
    for (r, c), code in (((0, 2), 0), ((2, 0), 1), ((2, 2), 2)):
        assert torch.equal(out[0, :, r:r + 2, c:c + 2], pal[code].view(3, 1, 1).expand(3, 2, 2))
    picture = sampling.usage_picture(torch.tensor([0, 2, 4, 1]), height=8, bar=2)
    assert picture.shape == (3, 8, 8)
    colours = sampling.palette(4)
    for code, high in enumerate((0, 4, 8, 2)):
        column = picture[:, :, 2 * code:2 * code + 2]
        filled = (column == colours[code].view(3, 1, 1)).all(0).all(1)  # (8,) rows, top first
        assert filled.tolist() == [False] * (8 - high) + [True] * high, code
        assert torch.allclose(column[:, :8 - high], torch.tensor(0.15))


def test_a_bare_vqvaes_code_grid_without_images_is_uniform_codes():
    """Kills uniform codes drawn from fewer codes than the codebook, or a usage that does not count
    them: n grids of the code shape, every code in range, usage summing to n h w."""
    vq = build("vqvae", num_codes=4, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    grid = sampling.code_grid(vq, n=20, seed=1, batch_size=7)
    assert grid.codes.shape == (20, *vq.code_shape) and grid.codes.min() >= 0 and grid.codes.max() < 4
    assert grid.usage.sum() == grid.codes.numel() and grid.used == 4
    with torch.no_grad():
        torch.testing.assert_close(grid.images, vq.decode_codes(grid.codes, mean=True), atol=1e-6, rtol=0)


def test_soft_label_bounds_and_the_default_view():
    """Kills off-by-one class bounds (class K accepted, class 0 refused), weights summing to 0
    accepted, and ``default_mean`` flipped: a binarised VAE or CVAE shows its decoder mean by
    default, a 256-level VAE and every other model show draws."""
    torch.testing.assert_close(sampling.soft_label(3, {0: 2.0, 2: 2.0}), torch.tensor([0.5, 0.0, 0.5]))
    for bad in ({3: 1.0}, {-1: 1.0}, {1: 0.0}):
        with pytest.raises(UserError):
            sampling.soft_label(3, bad)
    assert sampling.default_mean(build("vae", latent_dim=2, arch="mlp", hidden=8))
    assert sampling.default_mean(build("cvae", num_classes=3, latent_dim=2, arch="mlp", hidden=8))
    assert not sampling.default_mean(build("vae", levels=256, latent_dim=2, arch="mlp", hidden=8))
    assert not sampling.default_mean(build("made", (1, 2, 2), hidden=[8]))


# -- what ``genwb sample`` writes, on a stand-in run (write, its layout, codes_view, load) ----------
class _Run:
    """What write, test_images and codes_view read of a run: its folder and its data settings."""

    def __init__(self, path):
        self.path = path
        self.config = SimpleNamespace(data=SimpleNamespace(dataset="fashion-mnist", root="", binarize="dynamic", levels=2))


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A stand-in run whose test split is 40 distinct binary images, read with the run's settings."""
    x = (torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(9)) < 0.3).float()
    y = torch.arange(40) % 10

    def split(*args):
        assert args == ("fashion-mnist", None, "dynamic", 2)
        return x, y

    monkeypatch.setattr(sampling, "_test_split", split)
    return _Run(tmp_path)


def _png(path):
    return np.asarray(Image.open(path))


def test_paired_rows_put_each_original_above_its_reconstruction():
    """Kills a layout whose reconstructions are not under their originals (rows swapped, a short
    last row not padded to the width, the padding not blank): 5 pairs in rows of 2."""
    x, r = torch.arange(5.0).view(5, 1, 1, 1), 10 + torch.arange(5.0).view(5, 1, 1, 1)
    laid = sampling._paired_rows(x, r, 2).flatten().tolist()
    assert laid == [0, 1, 10, 11, 2, 3, 12, 13, 4, 0.5, 14, 0.5]


def test_write_draws_what_the_sampler_draws_with_the_defaults_users_get(fake_run, tmp_path):
    """Kills write passing the wrong seed, label, temperature or mean to the sampler, and changed
    defaults: 64 samples, 32 reconstructions in rows of 8 under their originals, 8 pairs of 9
    steps, 8 rows of classes; a short recon row laid out at its own width; each picture equals the
    grid of the sampler's own images, from the split the run names."""
    from workbench.images import grid

    made = _random_made()
    out = tmp_path / "s.png"
    (path,), note = sampling.write(fake_run, made, "samples", label=2, temperature=0.5, seed=3, out=out)
    assert path == out and note == ""
    assert np.array_equal(_png(out), grid(sampling.draw(made, 64, label=2, temperature=0.5, seed=3)))
    sampling.write(fake_run, made, "samples", mix={0: 1.0, 1: 3.0}, seed=4, out=out)
    mixed = sampling.draw(made, 64, label=sampling.soft_label(3, {0: 1.0, 1: 3.0}), seed=4)
    assert np.array_equal(_png(out), grid(mixed))
    sampling.write(fake_run, made, "classes", seed=5, temperature=0.7, out=out)
    assert np.array_equal(_png(out), grid(sampling.class_sweep(made, 8, seed=5, temperature=0.7), nrow=3))

    vae = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=16)
    sampling.write(fake_run, vae, "samples", mean=True, seed=6, out=out)
    assert np.array_equal(_png(out), grid(sampling.draw(vae, 64, mean=True, seed=6)))
    sampling.write(fake_run, vae, "recon", seed=1, out=out)
    x, y = sampling.test_images(fake_run, 32, 1)
    both = sampling.reconstruct(vae, x, y)
    assert np.array_equal(_png(out), grid(sampling._paired_rows(both[:32], both[32:], 8), nrow=8))
    sampling.write(fake_run, vae, "interpolate", slerp=True, seed=2, out=out)
    x, y = sampling.test_images(fake_run, 16, 2)
    rows = sampling.interpolate(vae, x[:8], x[8:], 9, y=(y[:8], y[8:]), slerp=True)
    assert np.array_equal(_png(out), grid(rows, nrow=9))
    sampling.write(fake_run, vae, "recon", n=5, out=out)  # a short row: 5 originals above their 5 reconstructions
    x, y = sampling.test_images(fake_run, 5, 0)
    both = sampling.reconstruct(vae, x, y)
    assert np.array_equal(_png(out), grid(sampling._paired_rows(both[:5], both[5:], 5), nrow=5))
    with pytest.raises(UserError):  # 21 pairs take 42 of the 40 test images
        sampling.write(fake_run, vae, "interpolate", n=21, out=out)
    sampling.write(fake_run, vae, "interpolate", n=20, steps=2, scale=2, out=out)
    assert _png(out).shape == (2 * (20 * 29 + 1), 2 * (2 * 29 + 1))


def test_write_progress_and_codes_pictures_and_notes(fake_run, tmp_path):
    """Kills the default frame interval (one frame every ceil(D / 24) subpixels, at least 1), the note's
    counts, the strip and GIF frame limits and the GIF's minimum scale of 2, the temperature
    not reaching progress or the prior's codes, and the code picture's layout (codes beside
    images, 4 pairs a row) and its usage file's name."""
    made = _random_made((1, 7, 7))
    out = tmp_path / "p.png"
    (strip, gif), note = sampling.write(fake_run, made, "progress", n=2, label=1, temperature=0.5, seed=1, out=out)
    assert note == "17 frames, one every 3 of 49 subpixels"  # 3, 6, ..., 48, then 49
    assert strip == out and gif == out.with_suffix(".gif")
    assert _png(strip).shape == (2 * 8 + 1, 16 * 8 + 1)  # 16 of the 17 frames, a row per image
    frames = [x for _, x in sampling.progress(made, 2, every=3, label=1, temperature=0.5, seed=1)]
    with Image.open(gif) as animation:
        assert animation.size == (2 * (2 * 8 + 1), 2 * (8 + 1))  # GIF merges unchanged frames: no count
        animation.seek(animation.n_frames - 1)
        last = np.asarray(animation.convert("L"))[::2, ::2]
    from workbench.images import grid

    assert np.array_equal(last, grid(frames[-1]))
    _, note = sampling.write(fake_run, made, "progress", n=1, every=10, out=out)
    assert note == "5 frames, one every 10 of 49 subpixels"
    _, note = sampling.write(fake_run, _random_made((1, 3, 3)), "progress", n=1, out=out)
    assert note == "9 frames, one every 1 of 9 subpixels"  # ceil(9 / 24) = 1
    for bad in ({"steps": 3}, {"slerp": True}, {"every": 2}, {"scale": 0}, {"scale": 17}, {"scale": 1.5}):
        with pytest.raises(UserError):
            sampling.write(fake_run, made, "samples", n=2, out=out, **bad)
    with pytest.raises(UserError):
        sampling.write(fake_run, made, "samples", n=2, out=tmp_path / "p.jpg")
    sampling.write(fake_run, made, "samples", n=2, scale=16, out=out)
    assert _png(out).shape == (16 * 9, 16 * 17)  # two 7x7 images side by side, 16 times

    vq = build("vqvae", num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    prior = build("vqvae_prior", vqvae=vq, num_classes=3, hidden_channels=8, num_layers=2, head_channels=8)
    (picture, usage), note = sampling.write(fake_run, prior, "codes", n=5, label=2, temperature=0.5, seed=3, out=out,
                                            scale=2)
    assert usage == tmp_path / "p-usage.png" and "codes of 5 prior samples; usage over 5 prior samples" in note
    grid_of = sampling.code_grid(prior, n=5, seed=3, label=2, temperature=0.5)
    assert not torch.equal(grid_of.codes, sampling.code_grid(prior, n=5, seed=3, label=2).codes)  # T matters
    assert np.array_equal(_png(picture)[::2, ::2], grid(grid_of.picture, nrow=8))  # at --scale 2
    assert _png(usage).shape[:2] == (2 * (48 + 2), 2 * (8 * 2 + 2))
    _, note = sampling.write(fake_run, prior, "progress", n=1, out=out)
    assert note == "17 frames, one every 3 of 49 codes"  # 7x7 codes: ceil(49 / 24) = 3


def test_codes_view_of_a_bare_vqvae_counts_usage_over_other_test_images(fake_run):
    """Kills usage counted over the shown images instead of USAGE_IMAGES (at most the split) other
    test images, the shown images not picked by the seed, and a note that misstates what was
    counted."""
    vq = build("vqvae", num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=0).train()
    vq.loss(sampling.test_images(fake_run, 40, 0)[0])  # k-means initialisation: codes differ between images
    vq.eval()
    grid, note = sampling.codes_view(fake_run, vq, 3, seed=4)
    assert not torch.equal(grid.codes, vq.encode_codes(sampling.test_images(fake_run, 3, 0)[0]))  # the seed picks
    x, _ = sampling.test_images(fake_run, 3, 4)
    assert torch.equal(grid.codes, vq.encode_codes(x))
    everything = sampling.test_images(fake_run, 40, 5)[0]
    assert torch.equal(grid.usage, torch.bincount(vq.encode_codes(everything).flatten(), minlength=8))
    assert note.startswith(f"codes of 3 test images; usage over 40 test images: {grid.used} of 8 codes used, ")
    assert note.endswith(f"perplexity {grid.perplexity:.1f}")


def test_load_takes_the_checkpoint_asked_for_or_the_other_one(tmp_path, monkeypatch):
    """Kills a load that ignores ``which``, that does not fall back to the other checkpoint when
    the asked one is missing, or that loads a missing one: each case against a stand-in run."""
    from workbench import runs

    class Stand:
        path = tmp_path

        def checkpoint_path(self, which):
            return tmp_path / f"{which}.pt"

        def status(self):
            return {"state": "running"}

        def no_checkpoint(self, otherwise):
            return otherwise

        def load_model(self, which, device):
            assert self.checkpoint_path(which).exists()
            return which, str(device)

    monkeypatch.setattr(runs, "open_run", lambda run_dir: Stand() if run_dir == tmp_path else None)
    with pytest.raises(UserError, match="no checkpoint yet"):
        sampling.load(tmp_path)
    (tmp_path / "last.pt").touch()
    assert sampling.load(tmp_path, "best", device="cpu")[1] == ("last", "cpu")
    (tmp_path / "best.pt").touch()
    assert sampling.load(tmp_path)[1] == ("best", "cpu")
    assert sampling.load(tmp_path, "last")[1][0] == "last"
    (tmp_path / "last.pt").unlink()
    assert sampling.load(tmp_path, "last")[1][0] == "best"
    with pytest.raises(UserError):
        sampling.load(tmp_path, "worst")


def test_the_operations_table_follows_what_each_model_can_do():
    """Kills mutants of the table of modes. ``_operations`` runs once at import, so it is called
    here for a mutant of it to be seen: every model samples; exactly the latent models
    reconstruct and interpolate; progress exactly where the model generates step by step
    (``sample_progress``), classes there and for the two Gaussian VAEs; codes for the VQ-VAE
    and its prior."""
    ops = sampling._operations()
    names = set(models.names())
    stepwise = {n for n in names if hasattr(models.get(n), "sample_progress")}
    assert {"made", "pixelcnn", "vqvae_prior"} <= stepwise and not {"vae", "vqvae"} & stepwise
    assert ops == {"samples": names, "recon": {"vae", "cvae", "vqvae", "vqvae_prior"},
                   "interpolate": {"vae", "cvae", "vqvae", "vqvae_prior"}, "classes": stepwise | {"vae", "cvae"},
                   "progress": stepwise, "codes": {"vqvae", "vqvae_prior"}}
    assert ops == sampling.OPERATIONS


def test_check_accepts_what_goes_with_each_mode():
    """Kills a temperature check that fires at T = 1 (``t != 1`` -> ``t != 2``), --mean refused
    for draws (the recon/progress test negated), class 0 refused as a label (``0 <=`` -> ``1 <=``
    or ``0 <``), class weights of the right shape refused, a zero weight in --mix refused, and a
    class sweep whose default seed is not draw's (row 0 is the draw of each class)."""
    vae = build("vae", latent_dim=2, arch="mlp", hidden=8)
    for op in ("samples", "recon", "interpolate"):
        sampling.check(vae, op)
    sampling.check(vae, "samples", mean=True, temperature=0.5)
    sampling.check(vae, "interpolate", mean=True)
    made = _random_made((1, 2, 2))
    sampling.check(made, "samples", label=0)
    sampling.check(made, "samples", label=sampling.soft_label(3, {0: 1.0}))
    assert sampling.parse_mix("3:0,7:1") == {3: 0.0, 7: 1.0}
    sweep = sampling.class_sweep(made, 1)
    assert all(torch.equal(sweep[k], sampling.draw(made, 1, label=k)[0]) for k in range(3))


def test_check_rejects_what_does_not_go_with_the_mode():
    """Kills the temperature refused for recon but not for interpolate, --mean allowed where the
    mode always shows the mean (recon, and the prior's progress), labels allowed where the test
    images' own labels are used, and class weights of the wrong shape accepted."""
    vae = build("vae", latent_dim=2, arch="mlp", hidden=8)
    cvae = build("cvae", num_classes=3, latent_dim=2, arch="mlp", hidden=8)
    prior = build("vqvae_prior", vqvae=build("vqvae", num_codes=4, code_dim=2, channels=4, res_channels=2, res_blocks=0),
                  hidden_channels=8, num_layers=2, head_channels=8)
    made = build("made", (1, 2, 2), num_classes=3, hidden=[8])
    cases = [(vae, "interpolate", {"temperature": 0.5}, "drawn samples"),
             (vae, "recon", {"temperature": 2.0}, "drawn samples"),
             (vae, "recon", {"mean": True}, "always shows"),
             (prior, "progress", {"mean": True}, "always shows"),
             (cvae, "recon", {"label": 1}, "own labels"),
             (cvae, "interpolate", {"mix": {1: 1.0}}, "own labels"),
             (made, "samples", {"label": torch.ones(4) / 4}, "shape")]
    for model, op, kwargs, words in cases:
        with pytest.raises(UserError, match=words):
            sampling.check(model, op, **kwargs)


def test_test_images_read_the_runs_own_split_settings(tmp_path, monkeypatch):
    """Kills test_images ignoring the run's data root or levels (the split's quantisation
    depends on them), and refusing 1 image or all of them."""
    seen = []
    x, y = squares(6)
    monkeypatch.setattr(sampling, "_test_split", lambda *args: seen.append(args) or (x, y))
    run = _Run(tmp_path)
    run.config.data = SimpleNamespace(dataset="mnist", root="/data/here", binarize="none", levels=4)
    one, _ = sampling.test_images(run, 1, seed=2)
    _, every = sampling.test_images(run, 6)
    assert seen[0] == ("mnist", "/data/here", "none", 4)
    assert len(one) == 1 and sorted(every.tolist()) == sorted(y.tolist())


def test_slerp_between_opposite_pairs_in_a_batch():
    """Kills the opposite-vector branch computed for the first pair only: norms over the whole
    batch (``norm(dim=-1)`` -> ``norm(dim=None)``), the projection without ``keepdim`` (which
    broadcasts across pairs), a one-hot axis sized by its index (a vector whose smallest component
    is not the last), a unit vector clamped for norms below 1; and the branch taken for 1-D latents, which have no orthogonal direction
    (there the path is the line, finite)."""
    a = torch.tensor([[0.5, 3.0, -1.0, 2.0], [1.0, -0.25, 2.0, -3.0]])
    b = -a * torch.tensor([[2.0], [0.5]])
    t = torch.linspace(0, 1, 5)
    path = sampling._path(a, b, t, True)
    for i, scale in enumerate((2.0, 0.5)):
        torch.testing.assert_close(path[i].norm(dim=1), a[i].norm() * (1 + (scale - 1) * t), atol=1e-5, rtol=0)
        assert abs(float(path[i, 2] @ a[i])) < 1e-4  # the midpoint is a quarter turn from both ends
    small = torch.tensor([[0.3, -0.1, 0.2, 0.05]])  # a norm below 1: the unit vector is still a / |a|
    torch.testing.assert_close(sampling._path(small, -small, t, True)[0].norm(dim=1), small.norm().expand(5), atol=1e-6, rtol=0)
    one = sampling._path(torch.tensor([[2.0]]), torch.tensor([[-3.0]]), t, True)[0]
    torch.testing.assert_close(one, (2.0 - 5.0 * t).view(5, 1), atol=1e-6, rtol=0)


def test_class_sweep_of_an_autoregressive_model_without_mask_sets():
    """Kills the mask-set branch taken for models that have none (``getattr(model, "num_masks",
    1)`` -> 2 or None): an FVSBN's row 0 is the draw of each class from the seed's uniforms."""
    torch.manual_seed(0)
    fvsbn = models.build("fvsbn", (1, 3, 3), 2, 3).eval()
    with torch.no_grad():
        for p in fvsbn.parameters():
            p.normal_(0, 1.0)
    sweep = sampling.class_sweep(fvsbn, 2, seed=1)
    assert sweep.shape == (6, 1, 3, 3)
    assert all(torch.equal(sweep[k], sampling.draw(fvsbn, 1, label=k, seed=1)[0]) for k in range(3))


def test_parallel_latents_follow_the_line_and_opposite_2d_ones_a_half_circle():
    """Kills the opposite-vector branch taken for parallel rows (``cos < 0`` -> ``cos < 1``: a half
    circle between a and 2a), the branch refused to 2-D latents (``shape[-1] > 1`` -> ``> 2``),
    and the half circle turned through -ortho instead of the documented orthogonal direction:
    the axis a leans on least, made orthogonal to a."""
    t = torch.linspace(0, 1, 5)
    a = torch.tensor([[3.0, -1.0, 2.0, 0.5]])
    line = (1 - t)[:, None] * a + t[:, None] * 2 * a
    torch.testing.assert_close(sampling._path(a, 2 * a, t, True)[0], line, atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(0)  # float64 rows parallel but for 1e-10: cos just below 1, sin below 1e-6
    a64 = torch.randn(1, 4, generator=g, dtype=torch.float64)
    b64 = 1.7 * a64 + 1e-10 * torch.randn(1, 4, generator=g, dtype=torch.float64)
    assert torch.nn.functional.cosine_similarity(a64, b64).item() < 1
    line64 = (1 - t.double())[:, None] * a64 + t.double()[:, None] * b64
    torch.testing.assert_close(sampling._path(a64, b64, t, True)[0], line64, atol=1e-9, rtol=0)
    flat = torch.tensor([[2.0, 0.0]])
    circle = sampling._path(flat, -flat, t, True)[0]
    torch.testing.assert_close(circle[2], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)  # (0, 1) leans least
    torch.testing.assert_close(circle.norm(dim=1), torch.full((5,), 2.0), atol=1e-6, rtol=0)
    unit = a[0] / a[0].norm()
    ortho = torch.eye(4)[3] - unit[3] * unit  # |a_3| = 0.5 is the smallest component
    mid = sampling._path(a, -a, t, True)[0, 2]
    torch.testing.assert_close(mid, a.norm() * ortho / ortho.norm(), atol=1e-5, rtol=0)


def test_interpolate_passes_slerp_labels_and_the_vqvae_line_on(trained_vae):
    """Kills interpolate dropping ``slerp`` (the VAE's path is the great circle, not the line), a
    CVAE pair of one class decoded without its label or with labels repeated wrongly, and a
    VQ-VAE's z_e joined by slerp instead of the line (its decoder is handed the line's points)."""
    steps, t = 5, torch.linspace(0, 1, 5)
    x, _ = squares(4, seed=11)
    vae = trained_vae
    with torch.no_grad():
        za, zb = vae.encode(x[:2])[0], vae.encode(x[2:])[0]
        curved = vae.decode(sampling._path(za, zb, t, True).flatten(0, 1), mean=True)
        straight = vae.decode(sampling._path(za, zb, t, False).flatten(0, 1), mean=True)
    torch.testing.assert_close(sampling.interpolate(vae, x[:2], x[2:], steps, slerp=True), curved, atol=1e-6, rtol=0)
    assert (curved - straight).abs().amax() > 1e-3  # the test can tell

    cvae = build("cvae", num_classes=10, latent_dim=4, arch="mlp", hidden=32)
    with torch.no_grad():
        for p in cvae.parameters():
            p.normal_(0, 0.5)
    y = torch.tensor([3, 8])
    rows = sampling.interpolate(cvae, x[:2], x[2:], steps, y=y)
    with torch.no_grad():
        za, zb = cvae.encode(x[:2], y)[0], cvae.encode(x[2:], y)[0]
        z = sampling._path(za, zb, t, False).flatten(0, 1)
        torch.testing.assert_close(rows, cvae.decode(z, y.repeat_interleave(steps), mean=True), atol=1e-6, rtol=0)
        assert (rows - cvae.decode(z, y.repeat(steps), mean=True)).abs().amax() > 1e-3

    vq = build("vqvae", num_codes=16, code_dim=4, channels=8, res_channels=4, res_blocks=1)
    with torch.no_grad():
        for p in vq.parameters():
            p.normal_(0, 0.5)
    decoded = []
    decode_latent = vq.decode_latent
    vq.decode_latent = lambda z, mean=True: decoded.append((z.clone(), mean)) or decode_latent(z, mean)
    sampling.interpolate(vq, x[:2], x[2:], steps)
    with torch.no_grad():
        za, zb = vq.encode(x[:2]), vq.encode(x[2:])
    (z, mean), = decoded
    assert mean is True
    torch.testing.assert_close(z, sampling._path(za, zb, t, False).flatten(0, 1), atol=1e-6, rtol=0)
    assert (z - sampling._path(za, zb, t, True).flatten(0, 1)).abs().amax() > 1e-3  # the test can tell


def test_reconstruct_and_class_sweep_in_batches_return_every_image():
    """Kills the VQ-VAE's reconstruction loop stopped after its first batch (``continue`` ->
    ``break``), and a class sweep whose short last call draws a full call's rows (``n - start``
    -> ``n + start``); and a two-set MADE treated as one set (``num_masks > 1`` -> ``> 2``)."""
    vq = build("vqvae", num_codes=16, code_dim=4, channels=8, res_channels=4, res_blocks=1)
    x, _ = squares(5, seed=12)
    torch.testing.assert_close(sampling.reconstruct(vq, x, batch_size=2), sampling.reconstruct(vq, x), atol=1e-6, rtol=0)
    made = _random_made()
    sweep = sampling.class_sweep(made, 5, seed=3, batch_size=6)  # rows of 2, then 2, then 1
    assert sweep.shape == (15, 1, 3, 3) and torch.equal(sweep, sampling.class_sweep(made, 5, seed=3))
    two = _random_made(num_masks=2)
    with torch.no_grad():
        two.label_proj.weight.zero_()  # only the mask set and the noise matter
    rows = sampling.class_sweep(two, 16, seed=0).view(16, 3, 9)
    assert all(torch.equal(r[0], r[k]) for r in rows for k in (1, 2))


def _message_cases():
    made = build("made", (1, 2, 2), hidden=[8])
    cvae = build("cvae", num_classes=10, latent_dim=2, arch="mlp", hidden=8)
    vq = build("vqvae", num_codes=4, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    x = torch.zeros(2, 1, 28, 28)
    return [
        (lambda run: sampling.parse_mix("x:1"), r"^--mix 'x:1': write class:weight pairs separated by commas, e\.g\. 3:0\.5,7:0\.5$"),
        (lambda run: sampling.parse_mix("3:1,3:2"), r"^--mix '3:1,3:2': class 3 appears twice$"),
        (lambda run: sampling.parse_mix("3:-1 "), r"^--mix '3:-1 ': weights must be non-negative numbers, got -1$"),
        (lambda run: sampling.parse_mix("3:0"), r"^--mix '3:0': the weights sum to 0; give at least one positive weight$"),
        (lambda run: sampling.soft_label(3, {5: 1.0}), r"^--mix: class 5 is out of range; classes are 0 to 2$"),
        (lambda run: sampling.soft_label(3, {0: 0.0}), r"^--mix: the weights sum to 0; give at least one positive weight$"),
        (lambda run: sampling.interpolate(cvae, x, x, 1), r"^--steps must be at least 2 \(the two ends\), got 1$"),
        (lambda run: sampling.interpolate(cvae, x, x[:1], 3), r"^interpolate needs as many start images as end images$"),
        (lambda run: sampling.interpolate(cvae, x, x, 50_001), r"^pairs x --steps 100002 is too many for one call"),
        (lambda run: sampling.interpolate(vq, x, x, 3, slerp=True), r"^--slerp is for the Gaussian latents of vae and cvae; the VQ-VAE's z_e"),
        (lambda run: sampling.interpolate(cvae, x, x, 3), r"^cvae is class-conditional: interpolate needs the images' labels y$"),
        (lambda run: sampling.reconstruct(cvae, x), r"^cvae is class-conditional: reconstruct needs the images' labels y$"),
        (lambda run: sampling.class_sweep(made, 1), r"^--mode classes needs a class-conditional run; this made run is unconditional$"),
        (lambda run: sampling.class_sweep(cvae, 10_001), r"^-n x classes 100010 is too many for one call"),
        (lambda run: sampling.test_images(run, 41), r"^-n 41: the fashion-mnist test split has 40 images; ask for 1 to 40$"),
        (lambda run: sampling.load(run.path, "worst"), r"^checkpoint must be 'best' or 'last', got 'worst'$"),
        (lambda run: sampling.write(run, made, "samples", steps=3), r"^--steps is the number of images per row of --mode interpolate$"),
        (lambda run: sampling.write(run, made, "samples", slerp=True), r"^--slerp applies to --mode interpolate$"),
        (lambda run: sampling.write(run, made, "samples", every=2), r"^--every is the number of subpixels between frames of --mode progress$"),
    ]


def test_each_bad_argument_gets_its_own_one_line_message(fake_run):
    """Kills every message of the checks replaced (by None, or by another case): each bad argument
    is named with its value and what to do."""
    for call, message in _message_cases():
        with pytest.raises(UserError, match=message):
            call(fake_run)


def test_write_checks_its_arguments_before_drawing(fake_run, tmp_path):
    """Kills write calling ``check`` without the label, the mix, the temperature or ``mean``: each
    bad one is refused with check's message, before anything is drawn or written. A mix that
    ``soft_label`` would refuse anyway does not tell; one given with a label, or to a mode that
    does not take one, does (write_9, write_15)."""
    made = _random_made()
    vq = build("vqvae", num_codes=4, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    out = tmp_path / "never.png"
    for model, mode, kwargs, message in [
            (made, "samples", {"label": 3}, "--label 3 is out of range"),
            (made, "samples", {"mix": {7: 1.0}}, "--mix: class 7 is out of range"),
            (made, "samples", {"label": 1, "mix": {0: 1.0}}, "give --label or --mix, not both"),
            (made, "classes", {"mix": {0: 1.0}}, "--mix applies to samples, progress and codes; --mode classes"),
            (vq, "samples", {"temperature": 0.5}, "--temperature: vqvae has no temperature"),
            (made, "samples", {"mean": True}, "--mean is the decoder's mean of a latent model")]:
        with pytest.raises(UserError, match=message):
            sampling.write(fake_run, model, mode, n=2, out=out, **kwargs)
    assert not out.exists()


def test_load_says_what_state_a_run_without_a_checkpoint_is_in(tmp_path, monkeypatch):
    """Kills the run's state read under another key or with another default in the message."""
    from workbench import runs

    class Stand:
        path = tmp_path
        state = {"state": "queued"}

        def checkpoint_path(self, which):
            return tmp_path / f"{which}.pt"

        def status(self):
            return self.state

        def no_checkpoint(self, otherwise):
            return otherwise

    stand = Stand()
    monkeypatch.setattr(runs, "open_run", lambda run_dir: stand)
    with pytest.raises(UserError, match=r"no checkpoint yet \(state: queued\); wait for the first one"):
        sampling.load(tmp_path)
    stand.state = {}
    with pytest.raises(UserError, match=r"no checkpoint yet \(state: unknown\)"):
        sampling.load(tmp_path)


def test_defaults_of_test_images_codes_view_and_the_split_root(fake_run, tmp_path, monkeypatch):
    """Kills the default seed of test_images and codes_view (0), codes_view's default temperature
    (1), and the run's data root dropped where a mode counts the test split."""
    assert torch.equal(sampling.test_images(fake_run, 5)[0], sampling.test_images(fake_run, 5, 0)[0])
    vq = build("vqvae", num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    prior = build("vqvae_prior", vqvae=vq, hidden_channels=8, num_layers=2, head_channels=8)
    with torch.no_grad():
        for p in prior.prior.parameters():
            p.normal_(0, 1.0)
    grid, _ = sampling.codes_view(fake_run, prior, 4)
    assert torch.equal(grid.codes, sampling.code_grid(prior, n=4, seed=0, temperature=1.0).codes)
    assert not torch.equal(grid.codes, sampling.code_grid(prior, n=4, seed=0, temperature=2.0).codes)
    seen = []
    monkeypatch.setattr(sampling, "_test_split", lambda *args: seen.append(args) or squares(3))
    run = _Run(tmp_path)
    run.config.data.root = "/data/here"
    assert len(sampling._test_split_of(run)) == 3 and seen == [("fashion-mnist", "/data/here", "dynamic", 2)]


def test_draw_and_progress_use_the_seeds_cpu_uniforms_and_the_seeded_global_stream():
    """The documented contract: the uniforms come from a CPU generator seeded with ``seed``; what a
    model draws on its own (a MADE's mask set per image) comes from the global stream seeded with
    it. Kills the uniforms left to the model or drawn from the global stream (``gen`` -> None,
    ``noise`` dropped), the temperature dropped at T = 2 (``!= 1.0`` -> ``!= 2.0``) or in
    progress, and progress's classes in turn counted from 1."""
    made = _random_made((1, 3, 3), num_masks=2)
    n, seed = 7, 5
    noise = torch.rand((n, 1, 3, 3), generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        expected = made.sample(n, y=torch.arange(n) % 3, noise=noise, temperature=2.0)
    assert torch.equal(sampling.draw(made, n, temperature=2.0, seed=seed), expected)
    frames = list(sampling.progress(made, n, every=9, temperature=2.0, seed=seed))
    assert torch.equal(frames[-1][1], expected)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        assert not torch.equal(expected, made.sample(n, y=torch.arange(n) % 3, noise=noise))  # T matters
    assert [d for d, _ in sampling.progress(_random_made(), 1, every=4)] == [4, 8, 9]  # the default seed is 0
    assert torch.equal(list(sampling.progress(made, 2, every=9))[-1][1], sampling.draw(made, 2, seed=0))


def test_code_grid_defaults_batches_seed_and_usage_length():
    """Kills code_grid's defaults (16 images, seed 0, T = 1), a short last batch of prior draws
    sized as a full one, the conditional prior's classes in turn lost across batches, a bare
    VQ-VAE's uniform codes drawn from the global stream (not reproducible by the seed), and the
    usage histogram cut short where the last codes are unused (``minlength`` dropped)."""
    vq = build("vqvae", num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    prior = build("vqvae_prior", vqvae=vq, num_classes=3, hidden_channels=8, num_layers=2, head_channels=8)
    with torch.no_grad():
        for p in prior.prior.parameters():
            p.normal_(0, 1.0)
    default = sampling.code_grid(prior)
    assert len(default.codes) == 16
    assert torch.equal(default.codes, sampling.code_grid(prior, n=16, seed=0, temperature=1.0).codes)
    assert not torch.equal(default.codes, sampling.code_grid(prior, n=16, seed=0, temperature=2.0).codes)
    assert torch.equal(sampling.code_grid(prior, n=5, batch_size=2).codes, sampling.code_grid(prior, n=5).codes)
    torch.manual_seed(1)
    bare = sampling.code_grid(vq, n=3, seed=4).codes
    torch.manual_seed(2)
    assert torch.equal(bare, sampling.code_grid(vq, n=3, seed=4).codes)
    assert torch.equal(bare, torch.randint(8, (3, 7, 7), generator=torch.Generator().manual_seed(4)))
    wide = build("vqvae", num_codes=64, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    grid = sampling.code_grid(wide, torch.zeros(2, 1, 28, 28))
    assert grid.usage.shape == (64,) and grid.usage.sum() == 2 * 49 and grid.used < 64


def test_code_colours_without_a_size_and_a_usage_of_ones():
    """Kills colour_codes that always resizes (it must keep the code grid's own size without
    ``size``), and usage bars scaled by at least 2 (a histogram of ones is bars of full height)."""
    codes = torch.tensor([[[0, 1], [-1, 2]]])
    coloured = sampling.colour_codes(codes, 3)
    assert coloured.shape == (1, 3, 2, 2)
    assert torch.equal(coloured[0, :, 1, 0], torch.zeros(3)) and torch.equal(coloured[0, :, 0, 1], sampling.palette(3)[1])
    picture = sampling.usage_picture(torch.tensor([1, 0, 1]), height=4, bar=1)
    assert torch.equal(picture[:, :, 0], sampling.palette(3)[0].view(3, 1).expand(3, 4))  # the whole column
    assert torch.equal(picture[:, :, 1], torch.full((3, 4), 0.15))


def test_write_names_its_file_by_mode_and_time_and_scales_every_picture(fake_run, tmp_path):
    """Kills the default file name (RUN_DIR/samples/<mode>-<time>.png), the scale dropped from the
    reconstructions, class sweeps and progress strips, class sweeps without ``mean``, and a bare
    VQ-VAE's code view written without its run (it reads the run's test images)."""
    import re

    from workbench.images import grid

    made = _random_made((1, 3, 3))
    (path,), _ = sampling.write(fake_run, made, "samples", n=2)
    assert path.parent == tmp_path / "samples" and re.fullmatch(r"samples-\d{8}-\d{6}\.png", path.name)
    out = tmp_path / "s.png"
    cvae = build("cvae", num_classes=10, latent_dim=2, arch="mlp", hidden=8)
    sampling.write(fake_run, cvae, "classes", n=1, mean=True, scale=2, seed=3, out=out)
    assert np.array_equal(_png(out)[::2, ::2], grid(sampling.class_sweep(cvae, 1, seed=3, mean=True), nrow=10))
    assert not np.array_equal(_png(out)[::2, ::2], grid(sampling.class_sweep(cvae, 1, seed=3), nrow=10))
    sampling.write(fake_run, cvae, "recon", n=2, scale=2, out=out)
    assert _png(out).shape[:2] == (2 * (2 * 29 + 1), 2 * (2 * 29 + 1))
    (strip, _), _ = sampling.write(fake_run, made, "progress", n=1, scale=3, out=out)
    assert _png(strip).shape[:2] == (3 * (3 + 2), 3 * (9 * 4 + 1))  # 9 frames of 3x3 with a 1-pixel border
    vq = build("vqvae", num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    _, note = sampling.write(fake_run, vq, "codes", n=2, out=out)
    assert note.startswith("codes of 2 test images; usage over 40 test images")


def test_progress_of_a_prior_over_a_wide_code_grid_counts_its_codes(fake_run, tmp_path):
    """Kills the prior's code count taken as the grid's width squared: 7 x 3 codes."""
    vq = build("vqvae", (1, 28, 12), num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=0)
    prior = build("vqvae_prior", (1, 28, 12), vqvae=vq, hidden_channels=8, num_layers=2, head_channels=8)
    _, note = sampling.write(fake_run, prior, "progress", n=1, out=tmp_path / "p.png")
    assert note == "21 frames, one every 1 of 21 codes"


def test_more_bad_arguments_get_their_own_messages(fake_run, tmp_path):
    """Kills each of these messages replaced, and the flag named wrong (``--label`` for ``--mix``)."""
    made = build("made", (1, 2, 2), hidden=[8])
    made_c = build("made", (1, 2, 2), num_classes=3, hidden=[8])
    cvae = build("cvae", num_classes=10, latent_dim=2, arch="mlp", hidden=8)
    vae = build("vae", latent_dim=2, arch="mlp", hidden=8)
    cases = [
        (lambda: sampling.check(made, "paint"), r"^unknown mode 'paint'; allowed: samples, recon, interpolate, classes, progress, codes$"),
        (lambda: sampling.check(made, "recon"), r"^--mode recon needs a model with an encoder \(cvae, vae, vqvae, vqvae_prior\); this run's model is made$"),
        (lambda: sampling.check(made, "samples", mean=True), r"^--mean is the decoder's mean of a latent model \(cvae, vae, vqvae, vqvae_prior\); made has none$"),
        (lambda: sampling.check(made_c, "samples", label=1, mix={1: 1}), r"^give --label or --mix, not both$"),
        (lambda: sampling.check(made, "samples", label=1), r"^--label given, but this made run is not class-conditional$"),
        (lambda: sampling.check(made, "samples", mix={1: 1}), r"^--mix given, but this made run is not class-conditional$"),
        (lambda: sampling.check(made_c, "classes", mix={1: 1}), r"^--mix applies to samples, progress and codes; --mode classes uses every class$"),
        (lambda: sampling.check(cvae, "recon", label=1), r"^--label applies to samples, progress and codes; --mode recon uses the test images' own labels$"),
        (lambda: sampling.check(made_c, "samples", label=3), r"^--label 3 is out of range; classes are 0 to 2$"),
        (lambda: sampling._check_count(0), r"^-n must be a positive whole number, got 0$"),
        (lambda: sampling._check_count(100_001), r"^-n 100001 is too many for one call; at most 100,000 \(run it several times with --seed\)$"),
        (lambda: next(sampling.progress(made, 0, every=1)), r"^-n 0: progress keeps every frame in memory; ask for 1 to 256 images$"),
        (lambda: next(sampling.progress(made, 1, every=0)), r"^--every must be a positive whole number of subpixels, got 0$"),
        (lambda: next(sampling.progress(vae, 1, every=1)), r"^--mode progress: vae does not generate step by step$"),
        (lambda: sampling.code_grid(made), r"^--mode codes needs a VQ-VAE \(vqvae, vqvae_prior\); this run's model is made$"),
        (lambda: sampling.write(fake_run, made, "samples", scale=0), r"^--scale must be a whole number from 1 to 16, got 0$"),
        (lambda: sampling.write(fake_run, made, "samples", out=tmp_path / "p.jpg"), r"^--out .*p\.jpg: give a \.png file name$"),
        (lambda: sampling.write(fake_run, cvae, "interpolate", n=21), r"^-n 21: each pair takes two of the 40 test images; ask for at most 20 pairs$"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()
