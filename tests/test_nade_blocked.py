"""NADE's blocked training path (the sums computed in cache-sized blocks of positions, the
CPU default) equals the one-shot (D, n, H) cumulative sum: log_prob and every parameter's
gradient, for block sizes that do and do not divide D, binary and multi-level, with and
without class conditioning; and the block size is chosen by device type."""
import pytest
import torch

import models


def build(shape, levels, num_classes=None, hidden_units=16):
    torch.manual_seed(0)
    model = models.build("nade", shape, levels, num_classes, hidden_units=hidden_units)
    with torch.no_grad():  # weights large enough that every conditional differs
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def log_prob_and_grads(model, x, y, block):
    model.block_size = block
    model.zero_grad(set_to_none=True)
    lp = model.log_prob(x, y)
    lp.sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.block_size = None
    return lp.detach(), grads


def assert_blocked_equals_one_shot(model, x, y, blocks):
    d = model.num_dims
    expected_lp, expected_grads = log_prob_and_grads(model, x, y, d)
    assert set(expected_grads) == {name for name, _ in model.named_parameters()}
    for block in blocks:
        lp, grads = log_prob_and_grads(model, x, y, block)
        torch.testing.assert_close(lp, expected_lp, rtol=1e-5, atol=1e-5, msg=f"log_prob, block {block}")
        for name, g in expected_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-5, atol=1e-5, msg=f"grad {name}, block {block}")


# D = 25 and 27: blocks 1, 4, 7, 10 leave a short last block; 5 and 9 divide D; 30 > D is one shot.
@pytest.mark.parametrize("shape,levels", [((1, 5, 5), 2), ((3, 3, 3), 4)])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_blocked_equals_one_shot(shape, levels, num_classes):
    model = build(shape, levels, num_classes)
    n = 6
    x = torch.randint(0, levels, (n, *shape)) / (levels - 1)
    y = None if num_classes is None else torch.arange(n) % num_classes
    assert_blocked_equals_one_shot(model, x, y, blocks=[1, 4, 5, 7, 9, 10, 30])


def test_blocked_equals_one_shot_with_soft_labels():
    model = build((1, 4, 4), 2, num_classes=3)
    x = torch.randint(0, 2, (4, 1, 4, 4)).float()
    y = torch.softmax(torch.randn(4, 3), 1)
    assert_blocked_equals_one_shot(model, x, y, blocks=[3, 5])


def test_default_block_at_28x28_equals_one_shot():
    """The block the CPU picks by itself (about 2 MiB slabs) at the preset's size."""
    # float64: summed over 784 positions and 64 images, float32 gradients of the hidden bias differ
    # by the order of the sums alone (beyond 1e-5 on some CPUs); a wrong block differs by far more
    model = build((1, 28, 28), 2, hidden_units=250).double()
    x = torch.bernoulli(torch.full((64, 1, 28, 28), 0.3, dtype=torch.float64))
    block = model._block_size(64, x.device)
    assert 2 <= block < model.num_dims
    assert_blocked_equals_one_shot(model, x, None, blocks=[None])


def test_block_size_is_chosen_by_device():
    model = build((1, 28, 28), 2, hidden_units=500)
    d = model.num_dims
    assert model._block_size(64, torch.device("cuda")) == d   # GPUs: one shot, as before
    assert model._block_size(64, torch.device("cpu")) == 16   # 2 MiB / (64 * 500 * 4 bytes)
    assert model._block_size(4096, torch.device("cpu")) == 2  # never below 2 positions
    assert model._block_size(1, torch.device("cpu")) == d     # 2 MiB / (500 * 4 bytes) > D
    assert build((1, 4, 4), 2)._block_size(64, torch.device("cpu")) == 16  # never above D
    model.block_size = 10
    assert model._block_size(64, torch.device("cuda")) == 10  # an explicit block wins everywhere


def test_blocked_training_step_matches_one_shot():
    """One Adam step from the same start gives the same weights either way."""
    x = torch.randint(0, 2, (8, 1, 6, 6)).float()
    weights = []
    for block in (36, 5):
        model = build((1, 6, 6), 2)
        model.block_size = block
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            model.loss(x)["loss"].backward()
            opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
