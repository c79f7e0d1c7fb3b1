"""PixelCNN (van den Oord et al. 2016) and the gated, class-conditional PixelCNN.

Plain (``gated = false``): a 7x7 mask-A convolution, residual blocks (1x1, kxk mask B, 1x1),
then 1x1 layers to a softmax over ``levels`` values per subpixel (one Bernoulli logit for
levels = 2). Its receptive field has the known blind spot: the field climbs only one column to
the right per row, so pixels up and to the right of that diagonal are never seen.

Gated (``gated = true``): a vertical stack (a (k//2+1) x k convolution over the rows above,
shifted down one row so it never sees the current row) and a horizontal stack (a 1 x (k//2+1)
convolution over the pixels to the left), joined by a 1x1 link from vertical to horizontal, with
gates tanh(f) * sigmoid(g) and residual connections in the horizontal stack: no blind spot.

Colour images are generated R, then G given R, then B given R and G: every feature belongs to a
colour group, and at the centre pixel a layer reads only earlier groups (mask A, first layer) or
earlier-or-same groups (mask B, every later layer). ``num_classes`` adds a learned per-class
bias to every residual block or gated layer (both stacks) and to the output head.
``embed_levels = true`` reads each input subpixel as a learned embedding of its integer level
instead of its scalar value: the mode for priors over VQ-VAE codes, where ``levels`` is the
codebook size and the codes are categories, not intensities.

``output = "logistic_mixture"`` replaces the softmax by the discretised mixture of ``mixtures``
logistics of PixelCNN++ (Salimans et al. 2017; shared with the PixelRNNs, see
``layers.mixture_conditionals``): per pixel, mixture logits and per-channel locations and
scales, with G's location shifted linearly by R and B's by R and G inside each component; every
bin a CDF difference with the end bins open, so it is exact and normalised over the levels and
its bits/dim compare with the softmax head's. It is parameterised per pixel, each parameter from
the colour groups up to its own (the mixture logits and R's from R's features, which see no
subpixel of the pixel; G's from R's and G's; B's from all), and draws R, then G, then B from their
conditionals given the pixel's earlier channels, so the samplers, ``log_prob`` and the
autoregressive tests need nothing new. Temperature T divides the mixture logits and multiplies
the logistic scales.

Sampling (``_sample``) caches activations: the output at a pixel only needs every layer's
activations at that pixel and at pixels already generated, so each step computes every layer at
one position (and, for the gated network, the vertical stack one row at a time once the row is
complete), instead of running the whole network on the whole image for every subpixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import AutoregressiveModel
from models.layers import (
    ClassEmbedding,
    MaskedConv2d,
    channel_groups,
    inverse_cdf,
    check_output,
    mixture_head_mask,
    mixture_image_log_prob,
    mixture_image_logits,
    mixture_inverse_cdf,
    mixture_param_count,
    raster_conv_mask,
)


def group_mask(groups_in: torch.Tensor, groups_out: torch.Tensor, include_same: bool) -> torch.Tensor:
    """(out, in) mask from explicit colour groups: earlier groups, plus the same one for mask B."""
    later = groups_in[None, :] < groups_out[:, None]
    same = groups_in[None, :] == groups_out[:, None]
    return (later | same if include_same else later).float()


def pointwise(in_channels: int, out_channels: int, colors: int) -> MaskedConv2d:
    """A 1x1 convolution with the mask-B colour structure."""
    mask = raster_conv_mask(in_channels, out_channels, (1, 1), colors, "B")
    return MaskedConv2d(in_channels, out_channels, 1, mask=mask)


def gate(a: torch.Tensor) -> torch.Tensor:
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


def shift_down(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t, (0, 0, 1, 0))[:, :, :-1]


def class_embedding(num_classes: int | None, dim: int) -> ClassEmbedding | None:
    if num_classes is None:
        return None
    emb = ClassEmbedding(num_classes, dim)
    nn.init.normal_(emb.weight, std=0.1)
    return emb


def masked_weight(conv: MaskedConv2d, rows: int | None = None) -> torch.Tensor:
    """The effective weight of a masked convolution, its first ``rows`` kernel rows,
    flattened to (out, in * kh * kw) once, for computing single output positions."""
    return (conv.mask * conv.weight)[:, :, :rows].flatten(1).contiguous()


def conv_at(weight: torch.Tensor, bias: torch.Tensor | None, patch: torch.Tensor) -> torch.Tensor:
    """One output position of a convolution: ``patch`` (n, in, kh, kw) and the flattened
    weight of :func:`masked_weight` -> (n, out)."""
    return F.linear(patch.flatten(1), weight, bias)


# -- inputs -----------------------------------------------------------------------------------
class InputEncoder(nn.Module):
    """Subpixels -> input features: the centred scalar value (1 feature per subpixel) or a
    learned embedding of the integer level (``embed_dim`` features), grouped by colour."""

    def __init__(self, colors: int, levels: int, embed_levels: bool, embed_dim: int):
        super().__init__()
        self.levels = levels
        self.per_subpixel = embed_dim if embed_levels else 1
        self.channels = colors * self.per_subpixel
        self.embedding = nn.Embedding(levels, embed_dim) if embed_levels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            return 2 * x - 1
        k = (x * (self.levels - 1)).round().long().clamp_(0, self.levels - 1)
        e = self.embedding(k)                                # (n, C, H, W, E)
        return e.permute(0, 1, 4, 2, 3).flatten(1, 2)       # channel c * E + e

    def encode(self, k: torch.Tensor) -> torch.Tensor:
        """Features (n, per_subpixel) of one sampled subpixel with integer levels ``k`` (n,)."""
        if self.embedding is None:
            return (2 * k.float() / (self.levels - 1) - 1)[:, None]
        return self.embedding(k)


# -- the plain PixelCNN -------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """relu -> 1x1 (c -> c/2) -> relu -> kxk mask B -> relu -> 1x1 (c/2 -> c), added to the input."""

    def __init__(self, channels: int, kernel_size: int, colors: int, num_classes: int | None):
        super().__init__()
        half = channels // 2
        self.reduce = pointwise(channels, half, colors)
        mask = raster_conv_mask(half, half, (kernel_size, kernel_size), colors, "B")
        self.conv = MaskedConv2d(half, half, kernel_size, padding=kernel_size // 2, mask=mask)
        self.expand = pointwise(half, channels, colors)
        self.cond = class_embedding(num_classes, half)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        a = self.reduce(F.relu(x))
        if self.cond is not None:
            a = a + self.cond(y)[:, :, None, None]
        return x + self.expand(F.relu(self.conv(F.relu(a))))


class PlainStack(nn.Module):
    def __init__(self, in_channels, channels, num_layers, kernel_size, first_kernel_size, colors, num_classes):
        super().__init__()
        mask = raster_conv_mask(in_channels, channels, (first_kernel_size,) * 2, colors, "A")
        self.first = MaskedConv2d(in_channels, channels, first_kernel_size, padding=first_kernel_size // 2, mask=mask)
        self.blocks = nn.ModuleList(ResidualBlock(channels, kernel_size, colors, num_classes) for _ in range(num_layers))
        self.input_pad = first_kernel_size // 2  # padding the sampler's input buffer needs

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        z = self.first(x)
        for block in self.blocks:
            z = block(z, y)
        return z

    def cache(self, x_buffer: torch.Tensor, y: torch.Tensor | None) -> "PlainCache":
        return PlainCache(self, x_buffer, y)


class PlainCache:
    """Activation cache of a PlainStack for sampling: the input of every kxk convolution, kept
    zero-padded on top, left and right, so that a kernel's upper half plus its centre row is one
    slice. ``features(h, w)`` computes every layer at (h, w) from the cached rows above and
    columns to the left (the masks give weight only there), and caches what it computed."""

    def __init__(self, stack: PlainStack, x_buffer: torch.Tensor, y: torch.Tensor | None):
        p0 = stack.input_pad
        n, height, width = x_buffer.shape[0], x_buffer.shape[2] - p0, x_buffer.shape[3] - 2 * p0
        self.x = x_buffer                         # input padded by p0 on top, left and right

        def top_rows(conv: MaskedConv2d):
            p = conv.kernel_size[0] // 2
            return masked_weight(conv, p + 1), conv.bias, p

        self.first = top_rows(stack.first)
        self.blocks = []
        for block in stack.blocks:
            w3, b3, p = top_rows(block.conv)
            buf = x_buffer.new_zeros(n, block.conv.in_channels, height + p, width + 2 * p)
            reduce_bias = block.reduce.bias if block.cond is None else block.reduce.bias + block.cond(y)
            self.blocks.append((
                masked_weight(block.reduce), reduce_bias,
                w3, b3, p, buf,
                masked_weight(block.expand), block.expand.bias,
            ))

    def features(self, h: int, w: int) -> torch.Tensor:
        weight, bias, p = self.first
        z = conv_at(weight, bias, self.x[:, :, h : h + p + 1, w : w + 2 * p + 1])
        for w_reduce, b_reduce, w3, b3, p, buf, w_expand, b_expand in self.blocks:
            buf[:, :, h + p, w + p] = F.relu(F.linear(F.relu(z), w_reduce, b_reduce))
            a = F.relu(conv_at(w3, b3, buf[:, :, h : h + p + 1, w : w + 2 * p + 1]))
            z = z + F.linear(a, w_expand, b_expand)
        return z

    def finish_row(self, h: int) -> None:
        """Nothing to do: every activation was cached at its own position."""


# -- the gated PixelCNN -------------------------------------------------------------------------
class GatedLayer(nn.Module):
    """One gated layer: vertical and horizontal stacks, the vertical-to-horizontal link, gates,
    and (after the first layer) the residual connection of the horizontal stack."""

    def __init__(self, in_channels, channels, kernel_size, colors, first: bool, num_classes):
        super().__init__()
        k, p = kernel_size, kernel_size // 2
        self.pad = p
        g_in, g_hidden = channel_groups(in_channels, colors), channel_groups(channels, colors)
        g_gate = torch.cat([g_hidden, g_hidden])  # f and g halves: feature j and j + c share a group
        # Vertical stack: rows r - p .. r (r itself only reaches the horizontal stack shifted down).
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (p + 1, k))
        # Horizontal stack: columns w - p .. w; the centre column carries the colour mask.
        mask = torch.ones(2 * channels, in_channels, 1, p + 1)
        mask[:, :, 0, p] = group_mask(g_in, g_gate, include_same=not first)
        self.h_conv = MaskedConv2d(in_channels, 2 * channels, (1, p + 1), mask=mask)
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)
        self.h_out = pointwise(channels, channels, colors)
        self.residual = not first
        self.cond_v = class_embedding(num_classes, 2 * channels)
        self.cond_h = class_embedding(num_classes, 2 * channels)

    def forward(self, v, h, y):
        p = self.pad
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))
        if self.cond_v is not None:
            v_pre = v_pre + self.cond_v(y)[:, :, None, None]
        h_pre = self.h_conv(F.pad(h, (p, 0, 0, 0))) + shift_down(self.link(v_pre))
        if self.cond_h is not None:
            h_pre = h_pre + self.cond_h(y)[:, :, None, None]
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), h_new + h if self.residual else h_new


class GatedStack(nn.Module):
    def __init__(self, in_channels, channels, num_layers, kernel_size, first_kernel_size, colors, num_classes):
        super().__init__()
        self.layers = nn.ModuleList(
            [GatedLayer(in_channels, channels, first_kernel_size, colors, True, num_classes)]
            + [GatedLayer(channels, channels, kernel_size, colors, False, num_classes) for _ in range(num_layers)]
        )
        self.input_pad = first_kernel_size // 2

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        return h

    def cache(self, x_buffer: torch.Tensor, y: torch.Tensor | None) -> "GatedCache":
        return GatedCache(self, x_buffer, y)


class GatedCache:
    """Activation cache of a GatedStack for sampling. The vertical stack of row r depends on
    rows <= r only and reaches the horizontal stack one row later, so it runs once per row, over
    the whole row, when the row is complete (``finish_row``). The horizontal stack runs at one
    position per step, from the current row's cached inputs to its left."""

    def __init__(self, stack: GatedStack, x_buffer: torch.Tensor, y: torch.Tensor | None):
        p0 = stack.input_pad
        n, self.height, self.width = x_buffer.shape[0], x_buffer.shape[2] - p0, x_buffer.shape[3] - 2 * p0
        self.x = x_buffer                      # padded by p0 on top, left and right
        self.layers = []
        v_in = x_buffer
        for i, layer in enumerate(stack.layers):
            p = layer.pad
            if i > 0:  # the vertical input of this layer: the gated output of the layer below
                v_in = x_buffer.new_zeros(n, layer.v_conv.in_channels, self.height + p, self.width + 2 * p)
            cond_v = None if layer.cond_v is None else layer.cond_v(y)[:, :, None, None]
            # What the horizontal pre-activation adds to its convolution, constant along a row:
            # its bias, the class bias, and link(v_pre) of the row above (nothing above row 0).
            h_bias = layer.h_conv.bias.expand(n, -1)
            if layer.cond_h is not None:
                h_bias = h_bias + layer.cond_h(y)
            self.layers.append({
                "p": p, "v_in": v_in, "v_w": layer.v_conv.weight, "v_b": layer.v_conv.bias, "cond_v": cond_v,
                "h_w": masked_weight(layer.h_conv), "h_bias": h_bias,
                "link_w": layer.link.weight, "residual": layer.residual,
                "out_w": masked_weight(layer.h_out), "out_b": layer.h_out.bias,
                "row_bias": h_bias.expand(self.width, -1, -1),           # (W, n, 2c)
                # horizontal input of this layer along the current row, padded on the left
                # (unused by the first layer, which reads the image row)
                "h_in": x_buffer.new_zeros(n, layer.h_conv.in_channels, self.width + p),
            })
        self.p0 = p0

    def features(self, h: int, w: int) -> torch.Tensor:
        out = None
        for i, L in enumerate(self.layers):
            p = L["p"]
            # the first layer's horizontal input is the current image row itself
            h_in = self.x[:, :, h + self.p0] if i == 0 else L["h_in"]
            h_pre = conv_at(L["h_w"], None, h_in[:, :, None, w : w + p + 1]) + L["row_bias"][w]
            out = F.linear(gate(h_pre), L["out_w"], L["out_b"])
            if L["residual"]:
                out = out + h_in[:, :, w + p]
            if i + 1 < len(self.layers):
                nxt = self.layers[i + 1]
                nxt["h_in"][:, :, nxt["p"] + w] = out
        return out

    def finish_row(self, h: int) -> None:
        """Run the vertical stack on the completed row h: its links feed row h + 1."""
        for i, L in enumerate(self.layers):
            p = L["p"]
            v_pre = F.conv2d(L["v_in"][:, :, h : h + p + 1], L["v_w"], L["v_b"])  # (n, 2c, 1, W)
            if L["cond_v"] is not None:
                v_pre = v_pre + L["cond_v"]
            L["row_bias"] = (F.conv2d(v_pre, L["link_w"])[:, :, 0].permute(2, 0, 1) + L["h_bias"]).contiguous()
            if i + 1 < len(self.layers):
                nxt = self.layers[i + 1]
                q = nxt["p"]
                nxt["v_in"][:, :, h + q, q : q + self.width] = gate(v_pre)[:, :, 0]
        # the horizontal inputs hold one row; clear them for the next
        for L in self.layers:
            L["h_in"].zero_()


# -- the model ----------------------------------------------------------------------------------
class OutputHead(nn.Module):
    """relu -> 1x1 -> (+ class bias) -> relu -> 1x1 to C * L_out logits, all mask B; or, with
    ``mixture_params`` P > 0, to the P parameters of a pixel's logistic mixture, each read from
    the colour groups up to its own (``layers.mixture_head_mask``): the mixture logits and R's
    parameters from the R group (which sees no subpixel of the pixel), G's from R and G, B's
    from all three."""

    def __init__(self, in_channels, hidden, colors, out_per_subpixel, num_classes, mixture_params: int = 0):
        super().__init__()
        self.hidden = pointwise(in_channels, hidden, colors)
        if mixture_params:
            mixtures = mixture_params // mixture_param_count(colors, 1)
            self.out = MaskedConv2d(hidden, mixture_params, 1, mask=mixture_head_mask(hidden, colors, mixtures)[:, :, None, None])
        else:
            self.out = pointwise(hidden, colors * out_per_subpixel, colors)
        self.mixture = bool(mixture_params)
        self.cond = class_embedding(num_classes, hidden)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        a = self.hidden(F.relu(z))
        if self.cond is not None:
            a = a + self.cond(y)[:, :, None, None]
        return self.out(F.relu(a))

    def cached(self, y: torch.Tensor | None, colors: int):
        """For sampling: a function (features (n, c) at one position, colour group g) -> the
        logits (n, L_out) of that subpixel, with the masked weights computed once."""
        w1 = masked_weight(self.hidden)
        b1 = self.hidden.bias if self.cond is None else self.hidden.bias + self.cond(y)
        if self.mixture:  # all the pixel's parameters; drawing colour c reads those of colours <= c
            w2, b2 = masked_weight(self.out), self.out.bias
            return lambda z, g: F.linear(F.relu(F.linear(F.relu(z), w1, b1)), w2, b2)
        w2, b2 = masked_weight(self.out).view(colors, -1, w1.shape[0]), self.out.bias.view(colors, -1)

        def logits(z: torch.Tensor, g: int) -> torch.Tensor:
            return F.linear(F.relu(F.linear(F.relu(z), w1, b1)), w2[g], b2[g])

        return logits


@register("pixelcnn")
class PixelCNN(AutoregressiveModel):
    """Hyper-parameters: ``gated``; ``hidden_channels`` (the residual stream of the plain
    network, whose kxk convolutions use half of it, or the feature maps of each gated stack);
    ``num_layers`` (residual blocks or gated layers after the first layer); ``kernel_size`` of
    those layers and ``first_kernel_size`` of the first (odd); ``head_channels`` of the 1x1
    output layer; ``embed_levels`` and ``embed_dim`` for categorical inputs; ``output``
    "categorical" (a softmax over the levels) or "logistic_mixture" (``mixtures`` discretised
    logistics per pixel, see ``layers.mixture_conditionals``)."""

    graph_sampling = True  # the cached sampler is pure tensor work: CUDA graphs replay it exactly

    def __init__(
        self,
        image_shape,
        levels: int = 2,
        num_classes: int | None = None,
        *,
        gated: bool = False,
        hidden_channels: int = 64,
        num_layers: int = 7,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 128,
        embed_levels: bool = False,
        embed_dim: int = 16,
        output: str = "categorical",
        mixtures: int = 10,
    ):
        super().__init__(image_shape, levels, num_classes)
        colors = self.image_shape[0]
        check_output(output, mixtures)
        if output == "logistic_mixture" and embed_levels:
            raise ValueError("output 'logistic_mixture' models intensities; embed_levels is for categories (use output 'categorical')")
        self.output, self.mixtures = output, int(mixtures)
        for name, k in (("kernel_size", kernel_size), ("first_kernel_size", first_kernel_size)):
            if int(k) < 1 or int(k) % 2 == 0:
                raise ValueError(f"{name} must be a positive odd integer, got {k}")
        if int(num_layers) < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        min_hidden = colors if gated else 2 * colors  # every colour group needs a feature
        if int(hidden_channels) < min_hidden:
            raise ValueError(f"hidden_channels must be at least {min_hidden} for {colors} colour channel(s), got {hidden_channels}")
        if int(head_channels) < colors:
            raise ValueError(f"head_channels must be at least {colors}, got {head_channels}")
        if embed_levels and int(embed_dim) < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.gated = bool(gated)
        self.out_per_subpixel = 1 if self.levels == 2 else self.levels
        self.encoder = InputEncoder(colors, self.levels, bool(embed_levels), int(embed_dim))
        stack = GatedStack if self.gated else PlainStack
        self.stack = stack(self.encoder.channels, int(hidden_channels), int(num_layers), int(kernel_size),
                           int(first_kernel_size), colors, num_classes)
        mixture_params = mixture_param_count(colors, self.mixtures) if output == "logistic_mixture" else 0
        self.head = OutputHead(int(hidden_channels), int(head_channels), colors, self.out_per_subpixel, num_classes, mixture_params)

    def _layout(self, out: torch.Tensor) -> torch.Tensor:
        """(n, C * L_out, H, W), channel c * L_out + l -> the layout of ``discrete_log_prob``."""
        n, (c, hh, ww) = out.shape[0], self.image_shape
        if self.levels == 2:
            return out
        return out.view(n, c, self.levels, hh, ww).transpose(1, 2)

    def _head_output(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(n, C * L_out, H, W) logits, or (n, P, H, W) mixture parameters."""
        return self.head(self.stack(self.encoder(x), y), y)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self._head_output(x, y)
        if self.output == "logistic_mixture":
            return mixture_image_logits(out.permute(0, 2, 3, 1), x, self.levels)
        return self._layout(out)

    def sampling_logits(self, x, y, temperature):
        if self.output == "logistic_mixture":  # T tempers the mixture itself
            out = self._head_output(x, y).permute(0, 2, 3, 1)
            return mixture_image_logits(out, x, self.levels, temperature), 1.0
        return super().sampling_logits(x, y, temperature)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.output != "logistic_mixture":
            return super().log_prob(x, y)
        y = self.check_labels(y, x.shape[0])
        return mixture_image_log_prob(self._head_output(x, y).permute(0, 2, 3, 1), x, self.levels)

    def _sample_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        """Cached sampling: per subpixel, every layer at one position (see PlainCache and
        GatedCache); the image is also kept as input features in a zero-padded buffer."""
        n, (colors, height, width) = noise.shape[0], self.image_shape
        p0, e = self.stack.input_pad, self.encoder.per_subpixel
        x_buffer = noise.new_zeros(n, self.encoder.channels, height + p0, width + 2 * p0)
        cache = self.stack.cache(x_buffer, y)
        head = self.head.cached(y, colors)
        x = torch.zeros_like(noise)
        mixture = self.output == "logistic_mixture"
        for h in range(height):
            for w in range(width):
                for c in range(colors):
                    logits = head(cache.features(h, w), c)
                    if mixture:  # channel c given the pixel's earlier channels; T tempers the mixture
                        k = mixture_inverse_cdf(logits, x[:, :, h, w], c, noise[:, c, h, w], self.levels, temperature)
                    else:
                        k = inverse_cdf(logits[:, 0] if self.levels == 2 else logits, noise[:, c, h, w], self.levels, temperature)
                    x[:, c, h, w] = self.from_levels(k)
                    x_buffer[:, c * e : (c + 1) * e, h + p0, w + p0] = self.encoder.encode(k)
                    yield x
            cache.finish_row(h)
