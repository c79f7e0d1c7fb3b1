"""PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu, 2016): Row LSTM and Diagonal BiLSTM.

Both share one skeleton: a 7x7 mask-A convolution lifts the image to a residual stream of
2h features, ``layers`` recurrent layers each add ``1x1(LSTM(stream))`` to the stream, and a
ReLU - 1x1 - ReLU - 1x1 head (mask B) gives a softmax over ``levels`` values per subpixel
(a Bernoulli for levels 2), or with ``output = "logistic_mixture"`` the discretised mixture
of logistics of PixelCNN++ over the levels (``layers.mixture_conditionals``; see pixelcnn.py).
Colour images are ordered R, then G given R, then B given R and G:
every feature, gate and logit belongs to a colour group (``layers.channel_groups``), and at
the pixel being predicted a group reads only earlier groups (mask A) or earlier-or-same groups
(mask B). Each LSTM has 4 gates of h channels, each gate split into the same R, G, B groups.
Between layers the stream is kept channels-last (n, H, W, features), so 1x1 convolutions are
linear layers; inside a recurrence each step's gates are (n, 4h, positions), contiguous, and the
state-to-state is a 1-d convolution over the positions (``lstm_scan``, one hand-written
autograd function for the whole loop: at small batch a training step is launch-bound).

Row LSTM: row by row; gates = masked 1 x k conv over the current row of the stream (the pixel
and the ones to its left) + k x 1 conv over the previous row's hidden state. Its receptive
field is a triangle above the pixel: some earlier pixels are never seen.

Diagonal BiLSTM: the map is skewed (row i shifted right by i) so that a column-wise LSTM with
a 2 x 1 state-to-state conv reads, at pixel (i, j), the states of (i-1, j) and (i, j-1): the
left-to-right stream covers every pixel above-left. A second stream runs right to left (the
width flipped); it reads (i, j+1), so it is shifted down one row before being added. The
right-to-left stream also reads the image itself (``close_blind_spot``): the mask-A features
never carry pixel (i-1, W-1) to pixel (i, j) for j < W-4, a blind spot of the paper's
construction; reading the raw row is legal once the stream is shifted down, and closes it.

Sampling carries the recurrent states forward: each subpixel costs one pixel's worth of
every layer (plus, for the Diagonal BiLSTM, one right-to-left scan per finished row), never a
pass over the image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import AutoregressiveModel
from models.layers import (
    ClassEmbedding,
    MaskedConv2d,
    MaskedLinear,
    autocast_off,
    channel_mask,
    check_output,
    inverse_cdf,
    mixture_head_mask,
    mixture_image_log_prob,
    mixture_image_logits,
    mixture_inverse_cdf,
    mixture_param_count,
    raster_conv_mask,
)


def lstm_cell(gates: torch.Tensor, c: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update; ``gates`` holds (o, f, i, g) stacked on ``dim``, each the shape of ``c``."""
    o, f, i, g = gates.chunk(4, dim=dim)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class _LSTMScan(torch.autograd.Function):
    """The parallel pass's recurrence, with a hand-written backward.

    ``groups`` independent LSTMs advance one step per entry of ``gates_in`` (T, n, groups * 4h,
    L), gates (o, f, i, g); a step's state-to-state is a 1-d convolution along L of the previous
    step's hidden states (n, groups * h, L): ``weight`` (groups * 4h, h, k), zero ``padding`` on
    both sides, the first L outputs kept. Returns every step's hidden states (T, n, groups * h, L).

    Why not autograd: at small batch the training step is launch-bound, and autograd spends
    about 30 operators per step on this loop (weight gradients and their accumulation every
    step, the slice and stack backwards that reassemble the four gates' gradients). Here the
    forward writes each step's activations into preallocated buffers (one sigmoid over the three
    sigmoid gates, one tanh), the backward writes each step's gate gradients in place into one
    buffer, and the state-to-state weight gradient is one convolution over all steps at the end."""

    @staticmethod
    def forward(ctx, gates_in, weight, padding: int, groups: int):
        steps, n, _, length = gates_in.shape
        hidden = weight.shape[1]
        sig = gates_in.new_empty(steps, n, groups, 3, hidden, length)  # sigmoid(o, f, i)
        # Step t's (c_{t-1}, g_t) side by side, as f and i are in sig: the backward's d_f = dc c_{t-1}
        # and d_i = dc g_t are then one product, and so are dc f and dc i. c_t goes in slot t + 1.
        cg = gates_in.new_empty(steps + 1, n, groups, 2, hidden, length)
        cg[0, :, :, 0].zero_()
        tanh_c = gates_in.new_empty(steps, n, groups, hidden, length)
        h = gates_in.new_empty(steps, n, groups * hidden, length)
        trim = length + 2 * padding - weight.shape[-1] + 1 != length
        gates_in = gates_in.contiguous().view(steps, n, groups, 4, hidden, length)
        # Every buffer is split into its steps up front (a handful of unbinds), not indexed step
        # by step: views cost no kernel, but each is a dispatch on the host.
        o, i = sig[:, :, :, 0].unbind(0), sig[:, :, :, 2].unbind(0)
        fi, cgs = sig[:, :, :, 1:3].unbind(0), cg.unbind(0)
        c, g = (x.unbind(0) for x in cg.unbind(3))  # c[t + 1] is c_t, g[t] is g_t
        hs, h4 = h.unbind(0), h.view(steps, n, groups, hidden, length).unbind(0)
        for t, (gates, sig_t, tanh_c_t) in enumerate(zip(gates_in.unbind(0), sig.unbind(0), tanh_c.unbind(0))):
            if t > 0:  # the state before the first step is zero
                recurrent = F.conv1d(hs[t - 1], weight, padding=padding, groups=groups)
                gates = gates + (recurrent[..., :length] if trim else recurrent).view_as(gates)
            torch.sigmoid(gates[:, :, :3], out=sig_t)
            torch.tanh(gates[:, :, 3], out=g[t])
            if t == 0:
                torch.mul(i[t], g[t], out=c[t + 1])
            else:
                torch.sum(fi[t] * cgs[t], dim=2, out=c[t + 1])  # f c_{t-1} + i g
            torch.tanh(c[t + 1], out=tanh_c_t)
            torch.mul(o[t], tanh_c_t, out=h4[t])
        ctx.save_for_backward(weight, sig, cg, tanh_c, h)
        ctx.padding, ctx.groups = padding, groups
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        weight, sig, cg, tanh_c, h = ctx.saved_tensors
        padding, groups = ctx.padding, ctx.groups
        steps, n, _, _, hidden, length = sig.shape
        k = weight.shape[-1]
        # The gradient of a correlation is a correlation with the kernel flipped and transposed
        # per group: (groups * h, 4h, k), padded k - 1 - padding on the left.
        back = weight.view(groups, 4 * hidden, hidden, k).transpose(1, 2).flip(-1).reshape(groups * hidden, 4 * hidden, k)
        skip = padding - (k - 1 - padding)  # extra outputs of the symmetric padding, on the left
        dgates = sig.new_empty(steps, n, groups, 4, hidden, length)
        grad_h = grad_h.view(steps, n, groups, hidden, length).unbind(0)
        o, g = sig[:, :, :, 0].unbind(0), cg[:, :, :, 1].unbind(0)
        fi = sig[:, :, :, 1:3].unbind(0)
        dgates_flat = dgates.view(steps, n, -1, length).unbind(0)
        d_o, d_fi, d_g = dgates[:, :, :, 0].unbind(0), dgates[:, :, :, 1:3].unbind(0), dgates[:, :, :, 3].unbind(0)
        dsig = dgates[:, :, :, :3].unbind(0)
        steps_of = list(zip(sig.unbind(0), cg.unbind(0), tanh_c.unbind(0)))
        dh, dc_carry = grad_h[-1], None
        for t in reversed(range(steps)):
            sig_t, cg_t, tanh_c_t = steps_of[t]
            dc = torch.ops.aten.tanh_backward(dh * o[t], tanh_c_t)
            if dc_carry is not None:
                dc = dc + dc_carry
            dc = dc.unsqueeze(2)
            torch.mul(dh, tanh_c_t, out=d_o[t])
            torch.mul(dc, cg_t, out=d_fi[t])  # d_f = dc c_{t-1} (0 at t = 0), d_i = dc g
            torch.ops.aten.sigmoid_backward.grad_input(dsig[t], sig_t, grad_input=dsig[t])
            dc_f, dc_i = (dc * fi[t]).unbind(2)
            torch.ops.aten.tanh_backward.grad_input(dc_i, g[t], grad_input=d_g[t])
            if t > 0:
                dc_carry = dc_f
                recurrent = F.conv1d(dgates_flat[t], back, padding=padding, groups=groups)
                dh = grad_h[t - 1] + recurrent[..., skip : skip + length].view_as(dc_f)
        dgates = dgates.view(steps, n, groups * 4 * hidden, length)
        grad_weight = None
        if ctx.needs_input_grad[1] and steps > 1:
            out_length = length + 2 * padding - k + 1
            grad_out = dgates[1:].flatten(0, 1)
            if out_length != length:  # the outputs the forward dropped had no gradient
                grad_out = F.pad(grad_out, (0, out_length - length))
            grad_weight = torch.ops.aten.convolution_backward(
                grad_out, h[:-1].flatten(0, 1), weight, None, [1], [padding], [1], False, [0], groups, [False, True, False]
            )[1]
        elif ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
        return dgates, grad_weight, None, None


def lstm_scan(gates_in: torch.Tensor, weight: torch.Tensor, padding: int, groups: int = 1) -> torch.Tensor:
    """See :class:`_LSTMScan`: gates_in (T, n, groups * 4h, L), weight (groups * 4h, h, k) ->
    hidden states (T, n, groups * h, L). In float32 under bf16 autocast too: the recurrence
    carries its state over hundreds of steps, and its backward has no autocast to follow."""
    dtype = torch.float32 if gates_in.dtype in (torch.float16, torch.bfloat16) else gates_in.dtype
    with autocast_off(gates_in.device):
        return _LSTMScan.apply(gates_in.to(dtype), weight.to(dtype), padding, groups)


def mask_b(in_features: int, out_features: int, colors: int) -> torch.Tensor:
    """(out, in) mask of a 1x1 convolution: a colour group reads earlier-or-same groups."""
    return channel_mask(in_features, out_features, colors, include_same=True)


def gate_mask(in_features: int, hidden: int, colors: int) -> torch.Tensor:
    """Mask B (4h, in) from a pixel's features to its own 4 gates, each split into colour groups."""
    return mask_b(in_features, hidden, colors).repeat(4, 1)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """(n, H, W, c): row i takes row i - 1; zeros enter at the top."""
    return F.pad(x, (0, 0, 0, 0, 1, 0))[:, : x.shape[1]]


def skew(x: torch.Tensor) -> torch.Tensor:
    """(n, H, W, ...) -> (n, H, W+H-1, ...) with row i shifted right by i (zeros elsewhere)."""
    n, h, w, *rest = x.shape
    padded = torch.cat([x, x.new_zeros((n, h, h, *rest))], dim=2)
    return padded.flatten(1, 2)[:, : h * (w + h - 1)].reshape(n, h, w + h - 1, *rest)


def unskew(s: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`skew`: (n, H, W+H-1, ...) -> (n, H, W, ...)."""
    n, h, _, *rest = s.shape
    flat = torch.cat([s.flatten(1, 2), s.new_zeros(n, h, *rest)], dim=1)
    return flat.reshape(n, h, width + h, *rest)[:, :, :width]


class _PixelRNN(AutoregressiveModel):
    """The shared skeleton: input conv, residual recurrent layers, output head, sampler loop."""

    graph_sampling = True  # the sampler is pure tensor work: CUDA graphs replay it exactly

    def __init__(self, image_shape, levels, num_classes, hidden, layers, head_channels, output="categorical", mixtures=10):
        super().__init__(image_shape, levels, num_classes)
        for name, value in (("hidden", hidden), ("layers", layers), ("head_channels", head_channels)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        check_output(output, mixtures)
        self.output, self.mixtures = output, int(mixtures)
        c = self.image_shape[0]
        self.hidden, self.features = int(hidden), 2 * int(hidden)
        self.out_per_color = 1 if self.levels == 2 else self.levels
        f, out = self.features, c * self.out_per_color
        self.input_conv = MaskedConv2d(c, f, 7, padding=3, mask=raster_conv_mask(c, f, (7, 7), c, "A"))
        if output == "logistic_mixture":
            # A pixel's mixture parameters, each from the colour groups up to its own: the
            # mixture logits and R's see no subpixel of the pixel, G's see R, B's see R and G.
            out = mixture_param_count(c, self.mixtures)
            last_mask = mixture_head_mask(head_channels, c, self.mixtures)
        else:
            last_mask = mask_b(head_channels, out, c)
        self.head = nn.Sequential(
            nn.ReLU(), MaskedLinear(f, head_channels, mask_b(f, head_channels, c)),
            nn.ReLU(), MaskedLinear(head_channels, out, last_mask),
        )

    # -- the parallel pass (training, log_prob) ----------------------------------------------
    def _head_output(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(n, H, W, C * out_per_color) logits, or (n, H, W, P) mixture parameters."""
        image = 2 * x - 1
        stream = self.input_conv(image).permute(0, 2, 3, 1).contiguous()  # (n, H, W, features)
        image = image.permute(0, 2, 3, 1)
        for layer in self.layers:
            stream = layer(stream, image, y)
        return self.head(stream)

    def sampling_logits(self, x, y, temperature):
        if self.output == "logistic_mixture":  # T tempers the mixture itself
            return mixture_image_logits(self._head_output(x, y), x, self.levels, temperature), 1.0
        return super().sampling_logits(x, y, temperature)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.output != "logistic_mixture":
            return super().log_prob(x, y)
        y = self.check_labels(y, x.shape[0])
        return mixture_image_log_prob(self._head_output(x, y), x, self.levels)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self._head_output(x, y)
        if self.output == "logistic_mixture":
            return mixture_image_logits(out, x, self.levels)
        if self.levels == 2:
            return out.permute(0, 3, 1, 2)
        n, h, w, _ = out.shape
        return out.view(n, h, w, self.image_shape[0], self.levels).permute(0, 4, 3, 1, 2)

    # -- sampling, one subpixel at a time with the recurrent states carried along -------------
    def _input_pixel(self, image_pad: torch.Tensor, r: int, j: int) -> torch.Tensor:
        """Stream entering layer 0 at pixel (r, j): the 7x7 conv on its patch of the padded image."""
        conv = self.input_conv
        patch = image_pad[:, :, r : r + 7, j : j + 7].flatten(1)
        return F.linear(patch, (conv.mask * conv.weight).flatten(1), conv.bias)

    def _sample_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        n = noise.shape[0]
        c, h, w = self.image_shape
        x = torch.zeros(n, c, h, w, device=noise.device)
        image_pad = torch.zeros(n, c, h + 6, w + 6, device=noise.device)  # 2x-1, zero-padded by 3
        states = [layer.start(n, w, y) for layer in self.layers]
        for r in range(h):
            row_above = image_pad[:, :, r + 2, 3 : 3 + w].transpose(1, 2)  # image row r-1, (n, W, C)
            for layer, state in zip(self.layers, states):
                layer.begin_row(state, r, row_above)
            for j in range(w):
                for ch in range(c):
                    stream = self._input_pixel(image_pad, r, j)
                    for layer, state in zip(self.layers, states):
                        stream = layer.step(state, stream, j)
                    if self.output == "logistic_mixture":  # T tempers the mixture itself
                        level = mixture_inverse_cdf(self.head(stream), x[:, :, r, j], ch, noise[:, ch, r, j], self.levels, temperature)
                    else:
                        logits = self.head(stream).view(n, c, self.out_per_color)[:, ch]
                        level = inverse_cdf(logits[:, 0] if self.levels == 2 else logits, noise[:, ch, r, j], self.levels, temperature)
                    x[:, ch, r, j] = self.from_levels(level)
                    image_pad[:, ch, r + 3, j + 3] = 2 * x[:, ch, r, j] - 1
                    yield x


def _class_bias(num_classes: int | None, size: int) -> ClassEmbedding | None:
    """A learned per-class bias added to the gates (zero at initialisation)."""
    if not num_classes:
        return None
    emb = ClassEmbedding(num_classes, size)
    nn.init.zeros_(emb.weight)
    return emb


# ---------------------------------------------------------------------------------------------
# Row LSTM
# ---------------------------------------------------------------------------------------------
class RowLSTMLayer(nn.Module):
    """gates(row r) = masked 1 x k conv of the stream on row r + k x 1 conv of the hidden state
    of row r-1 (+ a class bias); returns stream + 1x1(h).

    The right half of the masked 1 x k kernel is always zero, so only its left half and centre
    are parameters: a masked linear layer over the window of pixels j-k//2 .. j."""

    def __init__(self, features: int, hidden: int, colors: int, kernel_size: int, num_classes: int | None):
        super().__init__()
        self.hidden, self.half, self.kernel_size = hidden, kernel_size // 2, kernel_size
        taps = self.half + 1
        mask = torch.ones(4 * hidden, taps, features)  # every colour of the pixels to the left
        mask[:, -1] = gate_mask(features, hidden, colors)  # the pixel itself: mask B
        self.input_to_state = MaskedLinear(taps * features, 4 * hidden, mask.flatten(1))
        # The previous row lies entirely in the past of every subpixel of this row: no mask.
        self.state_to_state = nn.Linear(kernel_size * hidden, 4 * hidden, bias=False)
        self.output = MaskedLinear(hidden, features, mask_b(hidden, features, colors))
        self.class_bias = _class_bias(num_classes, 4 * hidden)

    def _from_above(self, h: torch.Tensor) -> torch.Tensor:
        """Sampler's k x 1 conv of the previous row's states (n, W, h) -> (n, W, 4h)."""
        width = h.shape[1]
        padded = F.pad(h, (0, 0, self.half, self.half))
        return self.state_to_state(torch.cat([padded[:, t : t + width] for t in range(self.kernel_size)], dim=-1))

    def forward(self, stream: torch.Tensor, image: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        n, height, width, _ = stream.shape
        # Every row's input-to-state at once, in the scan's layout: (H, n, 4h, W).
        padded = F.pad(stream.permute(1, 0, 3, 2), (self.half, 0))  # (H, n, features, k//2 + W)
        window = torch.cat([padded[..., t : t + width] for t in range(self.half + 1)], dim=2)
        conv = self.input_to_state
        bias = conv.bias[:, None]
        if self.class_bias is not None:
            bias = bias + self.class_bias(y)[:, :, None]
        gates_in = (conv.mask * conv.weight) @ window + bias
        # state_to_state's input is the window [h(j - k//2), ..., h(j + k//2)]: as a conv1d kernel.
        weight = self.state_to_state.weight.view(4 * self.hidden, self.kernel_size, self.hidden).transpose(1, 2)
        rows = lstm_scan(gates_in, weight.contiguous(), self.half)  # (H, n, h, W)
        return stream + self.output(rows.permute(1, 0, 3, 2))

    # -- incremental sampling: the states of row r-1 are fixed while row r is drawn -----------
    def start(self, n: int, width: int, y: torch.Tensor | None) -> dict:
        z = lambda w, ch: torch.zeros(n, w, ch, device=self.output.weight.device)  # noqa: E731
        return {
            "bias": self.class_bias(y) if self.class_bias is not None else 0.0,
            "row": z(width + self.half, self.output.out_features),  # this row's stream, left-padded
            "h": z(width, self.hidden), "c": z(width, self.hidden),
        }

    def begin_row(self, s: dict, r: int, image_row_above: torch.Tensor) -> None:
        s["from_above"] = self._from_above(s["h"])  # h and c still hold row r-1 (zeros for r = 0)
        s["c_above"] = s["c"].clone()

    def step(self, s: dict, stream: torch.Tensor, j: int) -> torch.Tensor:
        s["row"][:, j + self.half] = stream
        window = s["row"][:, j : j + self.half + 1].flatten(1)
        gates = self.input_to_state(window) + s["bias"] + s["from_above"][:, j]
        h, c = lstm_cell(gates, s["c_above"][:, j])
        s["h"][:, j], s["c"][:, j] = h, c
        return stream + self.output(h)


@register("row_lstm")
class RowLSTM(_PixelRNN):
    """PixelRNN with Row LSTM layers (triangular receptive field)."""

    def __init__(self, image_shape, levels: int = 2, num_classes: int | None = None, *,
                 hidden: int = 32, layers: int = 4, kernel_size: int = 3, head_channels: int = 64,
                 output: str = "categorical", mixtures: int = 10):
        super().__init__(image_shape, levels, num_classes, hidden, layers, head_channels, output, mixtures)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        c = self.image_shape[0]
        self.layers = nn.ModuleList(
            RowLSTMLayer(self.features, self.hidden, c, kernel_size, self.num_classes) for _ in range(layers)
        )


# ---------------------------------------------------------------------------------------------
# Diagonal BiLSTM
# ---------------------------------------------------------------------------------------------
class DiagonalBiLSTMLayer(nn.Module):
    """Both diagonal streams; returns stream + 1x1(left-to-right + right-to-left shifted down)."""

    def __init__(self, features: int, hidden: int, colors: int, num_classes: int | None, close_blind_spot: bool):
        super().__init__()
        self.hidden, self.reads_image = hidden, close_blind_spot
        self.l2r_input = MaskedLinear(features, 4 * hidden, gate_mask(features, hidden, colors))
        # Shifted down a row, the right-to-left stream only ever reaches earlier rows: it needs
        # no colour mask and may read the image row it runs on.
        self.r2l_input = nn.Linear(features + (colors if close_blind_spot else 0), 4 * hidden)
        # [left-to-right, right-to-left] x [state above; state before] x gates: both streams'
        # 2 x 1 state-to-state kernels, so that one scan advances both.
        bound = 1 / math.sqrt(2 * hidden)
        self.state_to_state = nn.Parameter(torch.empty(2, 2 * hidden, 4 * hidden).uniform_(-bound, bound))
        self.output = MaskedLinear(hidden, features, mask_b(hidden, features, colors))
        self.class_bias = _class_bias(num_classes, 8 * hidden)

    def _r2l_source(self, stream: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([stream, image], dim=-1) if self.reads_image else stream

    def forward(self, stream: torch.Tensor, image: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        n, height, width, _ = stream.shape
        hidden = self.hidden
        # Both streams' input-to-state on the image, then skewed into the scan's layout: column
        # by column, both streams stacked on the gates, (W+H-1, n, 2 * 4h, H). The skew fills
        # the cells that hold no pixel with zero gates. The cells before row i's first pixel
        # read only each other and start at zero, so they stay exactly zero (c = f * 0 + i *
        # tanh(0), h = o * tanh(0)): every row starts from a zero state, with no mask per step.
        # The cells after a row's last pixel are never read.
        gates = torch.stack([self.l2r_input(stream), self.r2l_input(self._r2l_source(stream, image).flip(2))], dim=3)
        if self.class_bias is not None:
            gates = gates + self.class_bias(y).view(n, 1, 1, 2, 4 * hidden)
        gates = skew(gates).permute(2, 0, 3, 4, 1).reshape(-1, n, 8 * hidden, height)
        # The 2 x 1 kernel as a convolution down the column: tap 0 reads the state above (i-1),
        # tap 1 the state before (the previous column, same row); one group per stream.
        weight = self.state_to_state.view(2, 2, hidden, 4 * hidden).permute(0, 3, 2, 1).reshape(8 * hidden, hidden, 2)
        states = lstm_scan(gates, weight, padding=1, groups=2)  # (W+H-1, n, 2h, H)
        states = unskew(states.view(-1, n, 2, hidden, height).permute(1, 4, 0, 2, 3), width)  # (n, H, W, 2, h)
        h_l2r, h_r2l = states.unbind(3)
        return stream + self.output(h_l2r + shift_down(h_r2l.flip(2)))

    # -- incremental sampling --------------------------------------------------------------------
    # Pixel (r, j) needs the left-to-right states of (r, j-1) and (r-1, j), and the right-to-left
    # state of (r-1, j), which depends on all of row r-1. So when row r begins, the right-to-left
    # stream scans the finished row r-1 once; then each pixel of row r advances the
    # left-to-right stream by one cell.
    def start(self, n: int, width: int, y: torch.Tensor | None) -> dict:
        z = lambda ch: torch.zeros(n, width, ch, device=self.state_to_state.device)  # noqa: E731
        bias = self.class_bias(y) if self.class_bias is not None else z(8 * self.hidden)[:, 0]
        bl, br = bias.chunk(2, dim=-1)
        return {
            "bias_l2r": bl, "bias_r2l": br,
            "stream": z(self.output.out_features),  # the stream entering this layer, this row
            "h": z(self.hidden), "c": z(self.hidden),  # left-to-right, this row (begin_row keeps row r-1)
            "r2l": z(self.hidden),                     # right-to-left of row r-1: what row r adds
        }

    def begin_row(self, s: dict, r: int, image_row_above: torch.Tensor) -> None:
        s["h_above"] = s["h"].clone()
        if r == 0:
            return  # row -1 does not exist: the shifted right-to-left stream is zero on row 0
        w = self.state_to_state[1]
        # "stream" still holds row r-1 and "r2l" row r-2, the cells above.
        gates = self.r2l_input(self._r2l_source(s["stream"], image_row_above)) + s["bias_r2l"][:, None]
        gates = gates + s["r2l"] @ w[: self.hidden]
        h = torch.zeros_like(s["r2l"][:, 0])
        c = torch.zeros_like(h)
        row = torch.empty_like(s["r2l"])
        for j in reversed(range(row.shape[1])):
            h, c = lstm_cell(gates[:, j] + h @ w[self.hidden :], c)
            row[:, j] = h
        s["r2l"] = row

    def step(self, s: dict, stream: torch.Tensor, j: int) -> torch.Tensor:
        s["stream"][:, j] = stream
        w = self.state_to_state[0]
        gates = self.l2r_input(stream) + s["bias_l2r"] + s["h_above"][:, j] @ w[: self.hidden]
        c_left = torch.zeros_like(s["c"][:, 0])
        if j > 0:
            gates = gates + s["h"][:, j - 1] @ w[self.hidden :]
            c_left = s["c"][:, j - 1]
        h, c = lstm_cell(gates, c_left)
        s["h"][:, j], s["c"][:, j] = h, c
        return stream + self.output(h + s["r2l"][:, j])


@register("diagonal_bilstm")
class DiagonalBiLSTM(_PixelRNN):
    """PixelRNN with Diagonal BiLSTM layers (every previous pixel in the receptive field)."""

    def __init__(self, image_shape, levels: int = 2, num_classes: int | None = None, *,
                 hidden: int = 16, layers: int = 4, head_channels: int = 64, close_blind_spot: bool = True,
                 output: str = "categorical", mixtures: int = 10):
        super().__init__(image_shape, levels, num_classes, hidden, layers, head_channels, output, mixtures)
        c = self.image_shape[0]
        self.layers = nn.ModuleList(
            DiagonalBiLSTMLayer(self.features, self.hidden, c, self.num_classes, bool(close_blind_spot))
            for _ in range(layers)
        )
