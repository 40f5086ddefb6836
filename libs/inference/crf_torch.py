"""The dense CRF of pydensecrf, in PyTorch tensor operations: the same numbers on any device.

Krähenbühl's mean-field inference filters the label distributions with two
Gaussian kernels through a permutohedral lattice (Adams et al. 2010). This is
that algorithm as pydensecrf's C++ sources compute it, step by step, so that
the posteriors agree to float rounding (the parity tests compare the two):

* features in units of their standard deviations: ``(x, y) / sxy`` for the
  smoothness kernel, ``(x, y, r, g, b) / (sxy, sxy, srgb, ...)`` for the
  appearance kernel;
* each feature vector scaled, elevated to d+1 coordinates, rounded to the
  nearest remainder-0 lattice point, ranked (a stable descending sort of the
  rounding residuals), and given barycentric weights on the d+1 vertices of
  its simplex;
* one filtering pass: splat onto the vertices, blur along each of the d+1
  lattice axes (``v + (left + right) / 2``, a missing neighbour reads zero),
  slice back with the same weights times ``1 / (1 + 2^-d)``;
* symmetric normalisation ``n^-1/2 K(n^-1/2 Q)`` with ``n = K 1``; Potts
  compatibility; ``Q <- softmax(-U + sum_k w_k K_k Q)`` from ``Q0 = softmax(-U)``.

Where C++ uses a hash table, this finds the lattice points once per image
with ``torch.unique`` over packed integer keys, and each point's blur
neighbours by ``searchsorted``. pydensecrf feeds pixels to its lattice four at
a time and inserts the zero features of the padding lanes as lattice points
too; they change which neighbours exist near the origin, so they are inserted
here as well. Both lattices of an image are built once and reused by every
iteration.
"""

import math

import torch

SIMD_LANES = 4  # pydensecrf pads the pixel count to a multiple of 4 (its SSE blocks)


class Lattice:
    """The permutohedral lattices of a batch of images, one per image, side by side in one table.

    ``features`` is a list of per-image N_i x d tensors. ``vertices`` (sum N_i x d+1) index the
    lattice points of each pixel's simplex, ``weights`` are its barycentric weights, and
    ``neighbours`` ((d+1) x 2 x M) the two blur neighbours of every point along every axis,
    shifted by one so that 0 is the "missing" row of zeros. The image is the most significant
    digit of a point's key, so images never share a point and each image's points keep the order
    (and the sums) they have alone.
    """

    def __init__(self, features):
        d = features[0].shape[1]
        padded = [torch.cat([f.float(), f.new_zeros((-len(f)) % SIMD_LANES, d)]) for f in features]
        f = torch.cat(padded)
        device = f.device
        image = torch.cat([torch.full((len(x),), i, device=device) for i, x in enumerate(padded)])
        real = torch.cat([torch.arange(len(x), device=device) < len(g)
                          for x, g in zip(padded, features)])
        # The scale of each coordinate, rounded to float32 as the C++ does (a double product).
        inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
        scale = torch.tensor([inv_std / math.sqrt((i + 2) * (i + 1)) for i in range(d)],
                             dtype=torch.float32, device=device)
        elevated = f.new_empty(len(f), d + 1)
        running = f.new_zeros(len(f))
        for j in range(d, 0, -1):
            scaled = f[:, j - 1] * scale[j - 1]
            elevated[:, j] = running - j * scaled
            running = running + scaled
        elevated[:, 0] = running
        inv_d1 = float(torch.tensor(1.0 / (d + 1), dtype=torch.float32))
        rounded = torch.round(elevated * inv_d1)  # ties to even, as SSE's rounding mode
        rem0 = rounded * (d + 1)
        residual = elevated - rem0
        # rank_i = #{j > i: r_i < r_j} + #{j < i: r_j <= r_i}: position in a stable descending sort
        less = residual[:, :, None] < residual[:, None, :]
        later = torch.ones(d + 1, d + 1, dtype=torch.bool, device=device).triu(1)
        rank = ((less & later).sum(2) + (~less.transpose(1, 2) & later.T).sum(2)).float()
        rank = rank + rounded.sum(1, keepdim=True)
        wrap = (d + 1) * ((rank < 0).float() - (rank >= d + 1).float())
        rank, rem0 = rank + wrap, rem0 + wrap
        bary = f.new_zeros(len(f), d + 2)
        rank_long = rank.long()
        for i in range(d + 1):
            v = (elevated[:, i] - rem0[:, i]) * inv_d1
            position = (d - rank_long[:, i])[:, None]
            bary.scatter_add_(1, position, v[:, None])
            bary.scatter_add_(1, position + 1, -v[:, None])
        bary[:, 0] += 1 + bary[:, d + 1]
        # Vertex k of the simplex: rem0 + k, less d+1 where the rank exceeds d - k.
        k = torch.arange(d + 1, device=device)
        keys = (rem0[:, None, :d] + k[None, :, None]
                - (d + 1) * (rank[:, None, :d] > d - k[None, :, None]).float()).long()
        keys = torch.cat([keys, image[:, None, None].expand(-1, d + 1, 1)], 2).reshape(-1, d + 1)
        low = torch.cat([keys[:, :d].amin(0) - d, keys.new_zeros(1)])  # room for the neighbours
        top = torch.cat([keys[:, :d].amax(0) + d, keys.new_full((1,), len(features) - 1)])
        span = top - low + 1
        self.span = span
        self.radix = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
        if float(span.double().prod()) >= 2 ** 62:
            raise ValueError("CRF features span too large a lattice for 64-bit keys")
        self.low = low
        points, index = torch.unique(self._pack(keys), return_inverse=True)
        self.vertices = index.reshape(-1, d + 1)[real] + 1
        self.weights = bary[real, : d + 1]
        coords = self._unpack(points)
        shifts = torch.full((d + 1, d + 1), -1, dtype=torch.long, device=device)
        shifts[torch.arange(d), torch.arange(d)] = d
        shifts[:, d] = 0  # a neighbour is in the same image
        self.neighbours = torch.stack([torch.stack([self._find(points, coords + s),
                                                    self._find(points, coords - s)])
                                       for s in shifts])
        self.n_points, self.alpha = len(points), 1.0 / (1.0 + 2.0 ** -d)

    def _pack(self, coords):
        return ((coords - self.low) * self.radix).sum(-1)

    def _unpack(self, packed):
        return (packed[:, None] // self.radix) % self.span + self.low

    def _find(self, points, coords):
        """1 + the index of each lattice point at ``coords``, or 0 where there is none."""
        packed = self._pack(coords)
        at = torch.searchsorted(points, packed).clamp(max=len(points) - 1)
        return torch.where(points[at] == packed, at + 1, 0)

    def filter(self, values, work):
        """Splat ``values`` (N x L), blur along every axis, slice: the unnormalised ``K values``.

        The result lives in ``work``, a dict of buffers that both kernels of an image reuse on
        every iteration: at 513x513 and 182 labels each buffer is ~200 MB, and fresh ones cost
        more in page faults than the arithmetic on a CPU.
        """
        rows, width = self.n_points + 1, values.shape[1]
        table, blurred = (_buffer(work, name, rows, width, values) for name in ("table", "blurred"))
        left_right = _buffer(work, "pair", 2 * (rows - 1), width, values).view(2, rows - 1, width)
        scratch, out = (_buffer(work, name, len(values), width, values) for name in ("scratch", "out"))
        table.zero_()
        blurred[0].zero_()
        for k in range(self.vertices.shape[1]):
            table.index_add_(0, self.vertices[:, k],
                             torch.mul(values, self.weights[:, k:k + 1], out=scratch))
        for left, right in self.neighbours:  # double-buffered; row 0 stays the zeros
            torch.index_select(table, 0, left, out=left_right[0])
            torch.index_select(table, 0, right, out=left_right[1])
            torch.add(table[1:], left_right[0].add_(left_right[1]), alpha=0.5, out=blurred[1:])
            table, blurred = blurred, table
        out.zero_()
        weights = self.weights * self.alpha
        for k in range(self.vertices.shape[1]):
            out.addcmul_(torch.index_select(table, 0, self.vertices[:, k], out=scratch),
                         weights[:, k:k + 1])
        return out


def _buffer(work, name, rows, cols, like):
    """A rows x cols view of the buffer ``work[name]``, grown when it is too small."""
    if name not in work or work[name].numel() < rows * cols:
        work[name] = like.new_empty(rows * cols)
    return work[name][: rows * cols].view(rows, cols)


class NormalisedKernel:
    """A Gaussian kernel on ``features`` with pydensecrf's symmetric normalisation."""

    def __init__(self, features, work):
        self.lattice, self.work = Lattice(features), work
        ones = features[0].new_ones(sum(len(f) for f in features), 1, dtype=torch.float32)
        self.norm = 1.0 / torch.sqrt(self.lattice.filter(ones, work) + 1e-20)

    def __call__(self, q):
        """``n^-1/2 K(n^-1/2 q)``, in the work buffer ``out``: read it before the next call."""
        scaled = torch.mul(q, self.norm, out=_buffer(self.work, "scaled", *q.shape, q))
        return self.lattice.filter(scaled, self.work).mul_(self.norm)


def crf_features(image, crf):
    """The two kernels' features of an HxWx3 image tensor: positions over ``pos_xy_std``, and
    positions over ``bi_xy_std`` with colours over ``bi_rgb_std`` (pixels in row-major order)."""
    height, width = image.shape[:2]
    y, x = torch.meshgrid(torch.arange(height, device=image.device, dtype=torch.float32),
                          torch.arange(width, device=image.device, dtype=torch.float32),
                          indexing="ij")
    xy = torch.stack([x.reshape(-1), y.reshape(-1)], 1)
    colour = image.reshape(-1, 3).float()
    return (xy / torch.tensor(crf.pos_xy_std, dtype=torch.float32),
            torch.cat([xy / torch.tensor(crf.bi_xy_std, dtype=torch.float32),
                       colour / torch.tensor(crf.bi_rgb_std, dtype=torch.float32)], 1))


@torch.inference_mode()
def torch_crf_posteriors(crf, images, probmaps):
    """Mean-field posteriors (each L x H x W) of ``probmaps`` on ``images`` (H x W x 3 uint8), all
    with the same L, in one batch: one lattice per kernel over all images, one softmax per pixel.

    ``crf`` holds the parameters (a :class:`~libs.inference.crf.DenseCRF`); the tensors stay on
    their device, and the results are float32 on it too.
    """
    n_labels = probmaps[0].shape[0]
    if n_labels == 1:
        return [torch.ones_like(p, dtype=torch.float32) for p in probmaps]
    features = [crf_features(image, crf) for image in images]
    work = {}  # the filter's buffers, shared by both kernels
    smooth, appearance = (NormalisedKernel([f[k] for f in features], work) for k in (0, 1))
    unary = torch.cat([-torch.log(p.float().clamp(1e-5, 1.0)).reshape(n_labels, -1).T
                       for p in probmaps]).contiguous()
    neg_unary = unary.neg_()
    q, energy = torch.softmax(neg_unary, dim=1), torch.empty_like(neg_unary)
    for _ in range(crf.iter_max):  # in place: a fresh 200 MB tensor costs its page faults
        torch.add(neg_unary, smooth(q), alpha=crf.pos_w, out=energy)
        energy.add_(appearance(q), alpha=crf.bi_w)
        torch.softmax(energy, dim=1, out=q)
    pieces = q.split([p[0].numel() for p in probmaps])
    return [piece.T.reshape(p.shape) for piece, p in zip(pieces, probmaps)]


def torch_crf_posterior(crf, image, probmap):
    """:func:`torch_crf_posteriors` of one image."""
    return torch_crf_posteriors(crf, [image], [probmap])[0]
