"""VQ-VAE: straight-through gradients, which parameters each loss term moves, codebook health
(perplexity, usage window, dead-code restart, k-means init, EMA update), the code interface,
checkpointed state, and training at tiny shapes."""
from __future__ import annotations

import math

import pytest
import torch

import models
from models.vqvae import VectorQuantizer, perplexity

TINY = [(1, 2, 2), (1, 3, 3), (3, 2, 2)]



def batch(shape, levels=2, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(levels, (n, *shape), generator=g).float() / (levels - 1)


def quantizer(k=8, d=2, **kw):
    kw = {"ema": False, "kmeans_init": False, "restart_dead": False, **kw}
    return VectorQuantizer(k, d, **kw)


def test_straight_through_passes_the_decoder_input_gradient_unchanged():
    torch.manual_seed(0)
    q = quantizer(k=4, d=3)
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 4)
    out = q(z_e)
    assert not torch.allclose(out["z_q"], z_e)  # the forward value is the codebook vector
    assert torch.allclose(out["z_q"], q.lookup(out["codes"]))
    (out["z_q"] * upstream).sum().backward()
    assert torch.equal(z_e.grad, upstream)


def test_codebook_loss_moves_only_the_codebook_and_commitment_only_the_encoder():
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, ema=False, kmeans_init=False, restart_dead=False, num_codes=8)
    out = m.loss(batch((1, 4, 4)))
    enc, dec, book = list(m.encoder.parameters()), list(m.decoder.parameters()), m.quantizer.embedding

    def grads(term):
        gs = torch.autograd.grad(term, enc + dec + [book], allow_unused=True, retain_graph=True)
        nonzero = [g is not None and g.abs().sum().item() > 0 for g in gs]
        return nonzero[: len(enc)], nonzero[len(enc) : len(enc) + len(dec)], nonzero[-1]

    enc_g, dec_g, book_g = grads(out["codebook"])
    assert book_g and not any(enc_g) and not any(dec_g)
    enc_g, dec_g, book_g = grads(out["commitment"])
    assert not book_g and all(enc_g) and not any(dec_g)


@pytest.mark.parametrize("beta", [0.25, 2.0])
def test_loss_gradients_are_recon_plus_beta_commitment_and_the_codebook_term(beta):
    """Kills `recon + commitment + beta * codebook` (the two terms are equal in value, so only the
    gradients tell them apart): from the loss, the encoder's gradient is the reconstruction's plus
    beta times that of ||z_e - sg[e]||^2, and the codebook's is that of ||sg[z_e] - e||^2 alone,
    both terms recomputed here from z_e and the codebook."""
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, ema=False, kmeans_init=False, restart_dead=False, num_codes=8, beta=beta)
    x = batch((1, 4, 4))
    enc, book = list(m.encoder.parameters()), m.quantizer.embedding
    out = m.loss(x)
    total = torch.autograd.grad(out["loss"], enc + [book])

    z_e = m.encode(x)
    e = book[m.quantize(z_e.detach())].permute(0, 3, 1, 2)  # (n, D, h, w) nearest codebook vectors
    commitment = (z_e - e.detach()).pow(2).sum() / len(x)
    codebook = (z_e.detach() - e).pow(2).sum() / len(x)
    recon = -m.likelihood.log_prob(m.decoder(z_e + (e - z_e).detach()).float(), x).mean()
    g_recon = torch.autograd.grad(recon, enc, retain_graph=True)
    g_commit = torch.autograd.grad(commitment, enc, retain_graph=True)
    (g_book,) = torch.autograd.grad(codebook, [book])
    for g, r, c in zip(total[:-1], g_recon, g_commit):
        torch.testing.assert_close(g, r + beta * c, atol=1e-5, rtol=1e-4)
    assert max(c.abs().max() for c in g_commit) > 1e-3  # the commitment term does reach the encoder
    torch.testing.assert_close(total[-1], g_book, atol=1e-6, rtol=1e-5)
    assert g_book.abs().max() > 1e-3


def test_with_ema_the_codebook_gets_no_gradient_and_no_codebook_loss():
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8)
    out = m.loss(batch((1, 4, 4)))
    assert not m.quantizer.embedding.requires_grad
    assert torch.isclose(out["loss"], out["recon"] + 0.25 * out["commitment"])


def test_perplexity_is_k_for_uniform_usage_and_one_for_a_single_code():
    k = 16
    assert math.isclose(perplexity(torch.arange(k).repeat(5), k).item(), k, rel_tol=1e-5)
    assert perplexity(torch.full((7, 3, 3), 5), k).item() == pytest.approx(1.0)
    assert perplexity(torch.tensor([0, 0, 1, 1]), k).item() == pytest.approx(2.0)


def test_codes_used_counts_distinct_codes_over_the_window():
    q = quantizer(k=8, d=1, usage_window=3)
    q.embedding.data = torch.arange(8.0)[:, None]
    for code, expected in zip([0, 1, 2, 3, 3, 3, 3], [1, 2, 3, 3, 2, 1, 1]):
        out = q(torch.full((1, 1, 1, 1), float(code)))
        assert out["codes_used"].item() == expected


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    q = quantizer(k=8, d=2, restart_dead=True, usage_window=3)
    q.embedding.data = torch.cat([torch.zeros(1, 2), torch.full((7, 2), 100.0)])  # only code 0 is ever near
    for _ in range(3):
        z = torch.randn(4, 2, 2, 2) * 0.1
        out = q(z)
        assert out["perplexity"].item() == pytest.approx(1.0) and out["restarted"].item() == 0
    assert q.dead_codes().tolist() == [False] + [True] * 7
    z = torch.randn(4, 2, 2, 2) * 0.1
    out = q(z)
    assert out["restarted"].item() == 7
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    revived = q.embedding.data[1:]
    assert torch.cdist(revived, flat).min(1).values.max() < 1e-6  # reset to encoder outputs
    assert set(range(1, 8)) <= set(out["codes"].flatten().tolist())  # and they are used at once
    assert out["codes_used"].item() == 8
    assert not q.dead_codes().any()


@pytest.mark.parametrize("ema", [False, True])
def test_usage_bookkeeping_matches_a_per_step_recomputation(ema):
    """The quantizer looks for dead codes only on calls where one can have died since its last
    look, and counts usage without syncing: the restarts, perplexity and codes used must still
    be those of checking and recounting from scratch at every step (across a checkpoint too)."""
    torch.manual_seed(0)
    q = quantizer(k=16, d=2, ema=ema, restart_dead=True, usage_window=4)
    g = torch.Generator().manual_seed(0)
    restarts = 0
    for i in range(80):
        if i == 40:  # a reloaded quantizer must not trust its predecessor's schedule
            fresh = quantizer(k=16, d=2, ema=ema, restart_dead=True, usage_window=4)
            fresh.load_state_dict(q.state_dict())
            q = fresh
        due = int(q.dead_codes().sum())
        z = torch.randn(2, 2, 2, 2, generator=g) * (0.1 if (i // 10) % 2 else 3.0) + i % 5
        out = q(z)
        assert out["restarted"].item() == due
        restarts += due
        p = torch.bincount(out["codes"].flatten(), minlength=16).double() / out["codes"].numel()
        expected = math.exp(-sum(x * math.log(x) for x in p.tolist() if x > 0))
        assert out["perplexity"].item() == pytest.approx(expected, rel=1e-6)
        assert out["codes_used"].item() == q.codes_used().item()
        assert out["codes_used"].item() == ((q.step - q.last_used) < 4).sum().item()
    assert restarts > 0


def test_ema_update_matches_its_formula_on_a_hand_computed_case():
    q = quantizer(k=2, d=2, ema=True, decay=0.5)
    q.embedding.data = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    q.ema_sum.copy_(q.embedding.data)
    z = torch.tensor([[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]).t().reshape(1, 2, 1, 3)  # codes 0, 0, 1
    q(z)
    # counts n = (2, 1), sums = ((3, 1), (9, 9)); N = 0.5 * 1 + 0.5 * n = (1.5, 1.0);
    # m = 0.5 * e + 0.5 * sums = ((1.5, 0.5), (9.5, 9.5)); e = m / N (Laplace smoothing ~1e-5)
    assert torch.allclose(q.ema_count, torch.tensor([1.5, 1.0]))
    assert torch.allclose(q.ema_sum, torch.tensor([[1.5, 0.5], [9.5, 9.5]]))
    assert torch.allclose(q.embedding.data, torch.tensor([[1.0, 1 / 3], [9.5, 9.5]]), atol=1e-4)


def test_ema_counts_are_laplace_smoothed():
    """Kills the EMA update without Laplace smoothing (e = m / N instead of m / N~): with eps 0.1
    the smoothing moves the codes by about 1 %, checked against a hand computation to 1e-5."""
    q = quantizer(k=2, d=2, ema=True, decay=0.5, eps=0.1)
    q.embedding.data = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    q.ema_sum.copy_(q.embedding.data)
    q(torch.tensor([[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]).t().reshape(1, 2, 1, 3))  # codes 0, 0, 1
    # N = (1.5, 1.0), sum 2.5; N~ = (N + 0.1) / (2.5 + 0.2) * 2.5 = (40/27, 55/54);
    # m = ((1.5, 0.5), (9.5, 9.5)); e = m / N~ = ((81/80, 27/80), (513/55, 513/55))
    expected = torch.tensor([[81 / 80, 27 / 80], [513 / 55, 513 / 55]])
    torch.testing.assert_close(q.embedding.data, expected, atol=1e-5, rtol=0)


def test_kmeans_initialisation_from_the_first_batch():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    z = (centres.repeat(16, 1) + 0.1 * torch.randn(64, 2)).t().reshape(1, 2, 8, 8)
    q = quantizer(k=4, d=2, kmeans_init=True)
    assert not q.initialised
    q(z)
    assert q.initialised
    dist = torch.cdist(centres, q.embedding.data)
    assert dist.min(1).values.max() < 0.2 and dist.argmin(1).unique().numel() == 4
    before = q.embedding.data.clone()
    q(z + 1.0)  # no second initialisation
    assert torch.equal(q.embedding.data, before)


def test_evaluation_leaves_the_quantizer_state_alone():
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.loss(batch((1, 4, 4)))
    m.encode_codes(batch((1, 4, 4)))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_checkpoint_captures_training_state():
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8, usage_window=5)
    for seed in range(3):
        m.loss(batch((1, 4, 4), seed=seed))
    keys = set(m.state_dict())
    assert {"quantizer.ema_count", "quantizer.ema_sum", "quantizer.initialised", "quantizer.step", "quantizer.last_used"} <= keys
    other = models.build("vqvae", (1, 4, 4), 2, num_codes=8, usage_window=5)
    other.load_state_dict(m.state_dict())
    x = batch((1, 4, 4), seed=9)
    torch.manual_seed(1)
    a = m.loss(x)
    torch.manual_seed(1)
    b = other.loss(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(m.quantizer.embedding, other.quantizer.embedding)


def test_codes_interface_and_bound():
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 28, 28), 2).eval()
    x = batch((1, 28, 28), n=3)
    codes = m.encode_codes(x)
    assert codes.dtype == torch.long and codes.shape == (3, 7, 7) and codes.max() < m.num_codes
    images = m.decode_codes(codes)
    assert images.shape == (3, 1, 28, 28)
    # the mean is p(x_i = 1 | codes) of the model's own likelihood: flip pixels of an image and
    # read the log-odds from recon_log_prob (kills a mean that is not the Bernoulli's)
    pixels = torch.randperm(784)[:12]
    ones, zeros = x[:1].repeat(12, 1, 1, 1).flatten(1), x[:1].repeat(12, 1, 1, 1).flatten(1)
    ones[torch.arange(12), pixels], zeros[torch.arange(12), pixels] = 1.0, 0.0
    with torch.no_grad():
        log_odds = m.recon_log_prob(ones.view(12, 1, 28, 28), codes[:1].repeat(12, 1, 1)) \
            - m.recon_log_prob(zeros.view(12, 1, 28, 28), codes[:1].repeat(12, 1, 1))
    torch.testing.assert_close(images[0].flatten()[pixels], torch.sigmoid(log_odds), atol=1e-4, rtol=0)
    expected = m.recon_log_prob(x, codes) - 49 * math.log(m.num_codes)
    assert torch.allclose(m.log_prob(x), expected)


def test_vqvae_is_unconditional():
    with pytest.raises(ValueError, match="unconditional"):
        models.build("vqvae", (1, 2, 2), 2, 3)


@pytest.mark.parametrize("levels", [2, 4])
def test_samples_are_on_the_level_grid_and_average_to_the_mean(levels):
    """Kills a draw off the level grid, or draws that do not follow the reported mean: from fixed
    codes, the average of many draws is ``decode_codes(mean=True)`` within 5 sigma."""
    torch.manual_seed(0)
    m = models.build("vqvae", (3, 2, 2), levels)
    xs = m.sample(20)
    k = xs * (levels - 1)
    assert xs.shape == (20, 3, 2, 2) and torch.allclose(k, k.round(), atol=1e-5)
    codes = torch.randint(m.num_codes, (2, *m.code_shape))
    n = 4000
    with torch.no_grad():
        draws = m.decode_codes(codes.repeat_interleave(n, 0), mean=False).view(2, n, 3, 2, 2)
        mean = m.decode_codes(codes, mean=True)
    assert (draws.mean(1) - mean).abs().max() < 5 * 0.5 / n ** 0.5


@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("shape", TINY)
def test_builds_at_tiny_shapes_and_loss_decreases(shape, ema):
    torch.manual_seed(0)
    m = models.build("vqvae", shape, 4, num_codes=16, code_dim=4, channels=16, res_channels=8, res_blocks=1, ema=ema)
    x = batch(shape, 4, n=32)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], 3e-3)
    losses = []
    for _ in range(40):
        out = m.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        assert all(v.dim() == 0 for k, v in out.items())
    assert sum(losses[-5:]) < sum(losses[:5]) - 5 * 0.5
    assert m.log_prob(x).shape == (32,)


def test_latent_hooks_for_interpolation_and_code_grids():
    """encode gives z_e before quantisation, quantize its nearest codes, decode_latent quantises
    then decodes, and none of them moves the quantiser's state."""
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 8, 8), 2, num_codes=8, code_dim=4, channels=8, res_channels=4, res_blocks=1).eval()
    x = batch((1, 8, 8), n=4)
    state = {k: v.clone() for k, v in m.quantizer.state_dict().items()}
    z_e = m.encode(x)
    assert z_e.shape == (4, 4, *m.code_shape)
    codes = m.quantize(z_e)
    assert torch.equal(codes, m.encode_codes(x)) and codes.max() < m.num_codes
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    nearest = torch.cdist(flat, m.quantizer.embedding).argmin(1)
    assert torch.equal(codes.flatten(), nearest)
    assert torch.equal(m.decode_latent(z_e), m.decode_codes(codes))
    mid = m.decode_latent(0.5 * (z_e[:2] + z_e[2:]))
    assert mid.shape == (2, 1, 8, 8)
    assert all(torch.equal(v, state[k]) for k, v in m.quantizer.state_dict().items())


# -- from mutation testing of models/vqvae.py (each test names the mutants it kills) -------------
def test_logged_elbo_is_the_mean_of_log_prob():
    """The loss's "elbo" is the bound log_prob reports, log p(x | z_q) - h w log K, averaged over
    the batch (in evaluation the two see the same codes). Kills `prior_log_prob + recon` and a
    bce reconstruction scaled by the batch size instead of divided by it."""
    torch.manual_seed(0)
    for levels in (2, 4):
        m = models.build("vqvae", (1, 4, 4), levels, num_codes=8, code_dim=4, channels=8, res_channels=4,
                         res_blocks=1).eval()
        x = batch((1, 4, 4), levels)
        with torch.no_grad():
            out = m.loss(x)
            assert out["elbo"].item() == pytest.approx(m.log_prob(x).mean().item(), rel=1e-5)
            assert out["recon"].item() == pytest.approx(-m.recon_log_prob(x, m.encode_codes(x)).mean().item(), rel=1e-5)


def test_samples_decode_codes_drawn_uniformly_from_the_k_codes():
    """With K = 2 codes on a 1x1 grid, every sample's mean is the decoding of code 0 or of code 1,
    each drawn about half the time (2,000 samples, 5 sigma). Kills a draw over K + 1 codes (an
    index past the codebook) or one that always picks the same code."""
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 2, 2), 2, num_codes=2, code_dim=2, channels=4, res_channels=2, res_blocks=1)
    assert m.code_shape == (1, 1)
    with torch.no_grad():
        images = m.sample(2000, mean=True).flatten(1)
        decoded = m.decode_codes(torch.tensor([[[0]], [[1]]])).flatten(1)
    assert not torch.allclose(decoded[0], decoded[1])
    dist = torch.cdist(images, decoded)
    assert dist.min(1).values.max() < 1e-5
    share = (dist.argmin(1) == 0).float().mean().item()
    assert abs(share - 0.5) < 5 * 0.5 / 2000 ** 0.5
    assert m.sample(0).shape == (0, 1, 2, 2) and m.sample(1).shape == (1, 1, 2, 2)


def test_random_rows_are_distinct_when_there_are_enough():
    """Kills `k <= n` -> `k < n`: k = n rows must be a permutation (k-means and restarts start
    from distinct encoder outputs), and k > n rows still come back (with repeats)."""
    from models.vqvae import random_rows

    torch.manual_seed(0)
    assert sorted(random_rows(6, 6, "cpu").tolist()) == list(range(6))
    assert len(set(random_rows(10, 4, "cpu").tolist())) == 4
    more = random_rows(3, 7, "cpu")
    assert len(more) == 7 and more.min() >= 0 and more.max() < 3


def test_kmeans_keeps_the_centre_of_an_empty_cluster():
    """Three centres started on three of four points of which two coincide: when both copies
    are picked, one cluster stays empty and keeps its start, and the centre on 4 or 6 moves to
    their mean 5. Kills `counts > 0` -> `>= 0` (0/0) and a mean that is not sum / count."""
    from models.vqvae import kmeans

    z = torch.tensor([[0.0, 0.0], [0.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    empty_seen = 0
    for seed in range(8):
        torch.manual_seed(seed)
        centres = sorted(tuple(c) for c in kmeans(z, 3).tolist())
        if centres[1] == (0.0, 0.0):
            assert centres == [(0.0, 0.0), (0.0, 0.0), (5.0, 0.0)]
            empty_seen += 1
        else:
            assert centres == [(0.0, 0.0), (4.0, 0.0), (6.0, 0.0)]
    assert 0 < empty_seen < 8  # both starts occurred
    # 0, 1 and 10 in two clusters: from every start Lloyd reaches {0.5, 10}; started on 0 and 1,
    # the singleton {10} must move its centre from 5.5 to 10 (kills `counts > 0` -> `> 1`)
    line = torch.tensor([[0.0], [1.0], [10.0]])
    for seed in range(6):
        torch.manual_seed(seed)
        assert sorted(kmeans(line, 2).flatten().tolist()) == [0.5, 10.0]


def test_quantizer_hyper_parameter_bounds():
    """decay 0 (no memory) is allowed, 1 (no update) is not; one code and one dimension are
    allowed, zero are not. Kills the boundary mutants of those checks, and of their messages,
    matched whole."""
    VectorQuantizer(1, 1, decay=0.0, usage_window=1)
    positive = "num_codes, code_dim and usage_window must be positive"
    for kw, message in (({"decay": 1.0}, "decay must be in [0, 1), got 1.0"),
                        ({"decay": -0.1}, "decay must be in [0, 1), got -0.1"), ({"usage_window": 0}, positive)):
        with pytest.raises(ValueError) as refused:
            VectorQuantizer(4, 2, **kw)
        assert str(refused.value) == message
    for k, d in ((0, 2), (4, 0)):
        with pytest.raises(ValueError) as refused:
            VectorQuantizer(k, d)
        assert str(refused.value) == positive


def test_the_vqvae_refusals_are_whole_messages():
    """Kills the VQ-VAE's two refusals' text changed or dropped."""
    for args, kw, message in [
            ((2, 3), {}, "vqvae is unconditional; set [model] conditional = true on the prior (vqvae_prior) instead"),
            ((2,), {"channels": 1}, "channels >= 2, res_channels >= 1, res_blocks >= 0, downsamples >= 0 and beta >= 0 are required")]:
        with pytest.raises(ValueError) as refused:
            models.build("vqvae", (1, 4, 4), *args, **kw)
        assert str(refused.value) == message


def test_configured_usage_window_reaches_the_quantizer():
    """With ``usage_window = 1`` a VQ-VAE's ``codes_used`` counts only the last batch's codes.
    Kills ``usage_window`` not passed from VQVAE to its quantizer (100 steps instead)."""
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8, code_dim=1, channels=4, res_channels=2, res_blocks=1,
                     usage_window=1, ema=False, kmeans_init=False, restart_dead=False)
    q = m.quantizer
    q.embedding.data = torch.arange(8.0)[:, None]
    used = [q(torch.full((1, 1, 1, 1), float(code)))["codes_used"].item() for code in (0, 1, 2)]
    assert used == [1, 1, 1]


def test_only_a_quantizer_without_dead_code_restarts_is_graph_capturable():
    """A restart is decided on the host at steps a CUDA graph would not replay. Kills the
    negation dropped in loss_capturable."""
    kw = {"num_codes": 4, "code_dim": 2, "channels": 4, "res_channels": 2, "res_blocks": 1}
    assert not models.build("vqvae", (1, 2, 2), 2, **kw).loss_capturable()
    assert models.build("vqvae", (1, 2, 2), 2, restart_dead=False, **kw).loss_capturable()


def test_perplexity_of_given_counts():
    """Kills `clamp(min=1)` -> `min=2` on the total of given counts, and `max(total, 1)` ->
    `max(total, 2)`: one observation of one code has perplexity 1 (given as counts, as codes,
    or quantised), counts (1, 1) perplexity 2."""
    assert perplexity(torch.tensor([2]), 3).item() == pytest.approx(1.0)
    assert quantizer(k=4, d=2)(torch.zeros(1, 2, 1, 1))["perplexity"].item() == pytest.approx(1.0)
    assert perplexity(None, 3, counts=torch.tensor([0.0, 1.0, 0.0])).item() == pytest.approx(1.0)
    assert perplexity(None, 3, counts=torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(2.0)


def test_a_loaded_uninitialised_state_is_initialised_again():
    """load_state_dict forgets that the codebook was initialised: loading a state whose k-means
    start has not happened yet makes the next training call run it. Kills the flag set to True
    on load (the codebook would stay at the previous batch's centres)."""
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    z = (centres.repeat(16, 1) + 0.1 * torch.randn(64, 2)).t().reshape(1, 2, 8, 8)
    q = quantizer(k=4, d=2, kmeans_init=True)
    q(z)
    q.load_state_dict(quantizer(k=4, d=2, kmeans_init=True).state_dict())
    q(z + 20.0)
    dist = torch.cdist(centres + 20.0, q.embedding.data)
    assert dist.min(1).values.max() < 0.2


def test_counts_stay_right_when_the_batch_size_changes():
    """The quantizer caches its vector of ones by size: calls of 2, 3 and 2 images report the
    perplexity of their own codes. Kills a cache reused at another size (`or` -> `and`,
    `!= n` -> `== n`)."""
    torch.manual_seed(0)
    q = quantizer(k=8, d=2)
    for n in (2, 3, 2):
        out = q(torch.randn(n, 2, 2, 2) * 0.5)
        p = torch.bincount(out["codes"].flatten(), minlength=8).double() / out["codes"].numel()
        expected = math.exp(-sum(x * math.log(x) for x in p.tolist() if x > 0))
        assert out["perplexity"].item() == pytest.approx(expected, rel=1e-6)


def test_loss_reports_the_codebook_health_of_its_batch():
    """The loss's perplexity, codes_used and restarted are the quantizer's for that batch.
    Kills the keys renamed (the panels that show codebook health would find nothing)."""
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=1,
                     ema=False, kmeans_init=False, restart_dead=False)  # the call leaves the codebook as it is
    x = batch((1, 4, 4))
    out = m.loss(x)
    codes = m.encode_codes(x)
    assert out["perplexity"].item() == pytest.approx(perplexity(codes, 8).item(), rel=1e-5)
    assert out["codes_used"].item() == m.quantizer.codes_used().item() >= 1
    assert out["restarted"].item() == 0


def test_decode_latent_passes_mean_on():
    """Kills `mean=mean` dropped in decode_latent: with mean=False the images are draws (0 or 1
    for binarised data), not the Bernoulli means."""
    torch.manual_seed(0)
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=1).eval()
    z_e = m.encode(batch((1, 4, 4)))
    assert set(m.decode_latent(z_e, mean=False).unique().tolist()) <= {0.0, 1.0}
    assert not set(m.decode_latent(z_e).unique().tolist()) <= {0.0, 1.0}


def test_vqvae_hyper_parameter_bounds_and_downsampling():
    """The smallest allowed values build and the next ones down raise; ``downsamples`` caps the
    halvings (4x4 -> a 2x2 grid with 1, 4x4 with 0); a learned scale is a parameter. Kills the
    boundary and `or` -> `and` mutants of the check, `most=downsamples` dropped and
    `learn_sigma` not passed on."""
    kw = {"num_codes": 4, "code_dim": 2, "channels": 2, "res_channels": 1}
    assert models.build("vqvae", (1, 4, 4), 2, res_blocks=0, downsamples=1, beta=0.0, **kw).code_shape == (2, 2)
    assert models.build("vqvae", (1, 4, 4), 2, downsamples=0, **kw).code_shape == (4, 4)
    for bad in ({"channels": 1}, {"res_channels": 0}, {"res_blocks": -1}, {"downsamples": -1}, {"beta": -0.1}):
        with pytest.raises(ValueError):
            models.build("vqvae", (1, 4, 4), 2, **{**kw, **bad})
    m = models.build("vqvae", (1, 4, 4), 256, likelihood="mse", learn_sigma=True, **kw)
    assert any(p is m.likelihood.log_sigma for p in m.parameters())


def test_perplexity_of_no_codes_is_one():
    """An empty code tensor (an empty batch) has perplexity exp(0) = 1, not NaN. Kills the
    guard `max(total, 1)` skipped for an integer total (0 / 0)."""
    assert perplexity(torch.zeros(0, 3, 3, dtype=torch.long), 4).item() == 1.0


def test_default_likelihood_is_bernoulli_for_binarised_data_and_logistic_for_grey():
    """likelihood = "auto" resolves with the model's levels. Kills the levels not passed to
    resolve_likelihood (a binarised VQ-VAE would be scored with a 2-level logistic)."""
    kw = {"num_codes": 4, "code_dim": 2, "channels": 4, "res_channels": 2, "res_blocks": 1}
    assert models.build("vqvae", (1, 4, 4), 2, **kw).likelihood.kind == "bce"
    assert models.build("vqvae", (1, 4, 4), 256, **kw).likelihood.kind == "logistic"


def test_configured_decay_reaches_the_ema_update():
    """One EMA step with decay 0.5 from a fresh codebook: N_k = 0.5 * 1 + 0.5 * n_k for the
    configured decay. Kills `decay` not passed from VQVAE to its quantizer (0.99 instead)."""
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=4, code_dim=2, channels=4, res_channels=2,
                     res_blocks=1, ema=True, decay=0.5, kmeans_init=False, restart_dead=False)
    q = m.quantizer
    before = q.ema_count.clone()
    z = torch.randn(2, 2, 2, 2)
    codes = q(z)["codes"]
    n = torch.bincount(codes.flatten(), minlength=4).float()
    assert torch.allclose(q.ema_count, 0.5 * before + 0.5 * n, atol=1e-6)


def test_codebook_starts_uniform_in_plus_minus_one_over_k():
    """Without k-means the codebook starts as U(-1/K, 1/K), the usual VQ-VAE start: every
    entry inside the interval and both halves used. Kills a bound dropped, doubled or
    multiplied by K."""
    torch.manual_seed(0)
    k = 16
    e = quantizer(k=k, d=32).embedding.data
    assert e.abs().max().item() <= 1.0 / k
    assert e.max().item() > 0.9 / k and e.min().item() < -0.9 / k


def test_a_bfloat16_encoder_output_is_quantised_in_float32():
    """Under autocast the encoder hands over bfloat16: the quantizer computes its distances and
    returns z_q in float32, and the loss's reconstruction term is float32 too, equal to the
    float32 model's within bfloat16 rounding. Kills the casts inverted or dropped in
    VectorQuantizer.forward and VQVAE.loss."""
    torch.manual_seed(0)
    q = quantizer(k=8, d=2)
    z = torch.randn(2, 2, 3, 3).bfloat16()
    out, ref = q(z), q(z.float())
    assert out["z_q"].dtype == torch.float32 and torch.equal(out["codes"], ref["codes"])
    m = models.build("vqvae", (1, 4, 4), 2, num_codes=8, code_dim=2, channels=4, res_channels=2, res_blocks=1,
                     ema=False, kmeans_init=False, restart_dead=False)
    x = batch((1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m.loss(x)
    assert low["recon"].dtype == torch.float32
    assert low["recon"].item() == pytest.approx(m.loss(x)["recon"].item(), rel=0.05)
