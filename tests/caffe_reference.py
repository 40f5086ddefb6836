"""Test fixtures for convert.py: DeepLab v2 caffemodels and a NumPy Caffe forward pass.

``deeplab_caffe_layers`` writes the layers of the released DeepLab v2 ResNet-101
MSC nets with their real names and parameters (data layer, the shrunken inputs
of the 0.75x / 0.5x branches, every convolution / BatchNorm / Scale / ReLU /
Eltwise layer, the ASPP head, the branch copies with ``_res075`` / ``_res05``
suffixes, the max fusion and the loss layers) and random weights.

``caffe_forward`` runs such a list of layers the way Caffe does, in float64,
straight from the protobuf messages. It shares no code with the converter or
with the PyTorch model: it follows the ``bottom`` / ``top`` names of the net and
reimplements Caffe's layer semantics (im2col convolution with dilation,
BatchNorm with the moving-average normaliser, Scale, ceil-mode max pooling with
Caffe's clipping rule, Eltwise, ReLU), so comparing its output with the
converted PyTorch model checks the whole conversion end to end.
"""

import math

import numpy as np

from libs.caffe.protobuf import POOL_MAX, SCHEMA, build_classes, field
from libs.utils.atomic import write_bytes

# The reader's schema plus what only the fixtures write and the reference forward pass reads:
# the net's wiring (bottom/top), ReLU, Eltwise and DeepLab's Interp layer
# (caffe.proto of deeplab-public-ver2), and BatchNorm's training settings.
FIXTURE_SCHEMA = {
    **SCHEMA,
    "BatchNormParameter": SCHEMA["BatchNormParameter"] + [
        field("use_global_stats", 1, "bool"),
        field("moving_average_fraction", 2, "float", "0.999"),
    ],
    "EltwiseParameter": [field("operation", 1, "int32", "1"),
                         field("coeff", 2, "float", repeated=True)],
    "ReLUParameter": [field("negative_slope", 1, "float", "0")],
    "InterpParameter": [
        field("height", 1, "int32", "0"), field("width", 2, "int32", "0"),
        field("zoom_factor", 3, "int32", "1"), field("shrink_factor", 4, "int32", "1"),
        field("pad_beg", 5, "int32", "0"), field("pad_end", 6, "int32", "0"),
    ],
    "LayerParameter": SCHEMA["LayerParameter"] + [
        field("bottom", 3, "string", repeated=True),
        field("top", 4, "string", repeated=True),
        field("eltwise_param", 110, "EltwiseParameter"),
        field("relu_param", 123, "ReLUParameter"),
        field("interp_param", 143, "InterpParameter"),
    ],
}
_CLASSES = build_classes(FIXTURE_SCHEMA)
NetParameter, LayerParameter, BlobProto = (_CLASSES[name] for name in
                                           ("NetParameter", "LayerParameter", "BlobProto"))

ELTWISE_PROD, ELTWISE_SUM, ELTWISE_MAX = 0, 1, 2  # EltwiseParameter.EltwiseOp
BLOB_DATA_TAG = b"\x2a"  # BlobProto field 5 (data), wire type 2 (length-delimited: packed)
RESNET101_BLOCKS = (3, 4, 23, 3)
STAGE_WIDTH = {2: 4, 3: 8, 4: 16, 5: 32}  # output channels in units of the stem width
STAGE_DILATION = {2: 1, 3: 1, 4: 2, 5: 4}
BRANCH_SUFFIXES = ("_res075", "_res05")


def caffe_block_names(n_blocks):
    """Caffe ResNet naming: a, b, c for short stages, else a, b1, b2, ..."""
    if n_blocks <= 3:
        return ["a", "b", "c"][:n_blocks]
    return ["a"] + [f"b{i}" for i in range(1, n_blocks)]


def _varint(n):
    """``n`` as a protobuf varint: 7 bits a byte, low bits first, high bit set on all but the last."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def array_to_blob(array, blob):
    """Set a BlobProto to ``array``: its shape and packed float data.

    A packed float field is one length-delimited record of little-endian floats, so the
    array's bytes are merged in as that record: what Caffe writes, without creating a
    Python float per value.
    """
    array = np.ascontiguousarray(array, dtype="<f4")
    blob.Clear()
    blob.shape.dim[:] = [int(d) for d in array.shape]
    data = array.tobytes()
    blob.MergeFromString(BLOB_DATA_TAG + _varint(len(data)) + data)
    return blob


def write_caffemodel(layers, path, name="deeplab"):
    """Write ``LayerParameter`` messages as a NetParameter to ``path``, atomically."""
    net = NetParameter(name=name)
    for layer in layers:
        net.layer.add().CopyFrom(layer)
    return write_bytes(net.SerializeToString(), path)


class _NetWriter:
    """Appends LayerParameter messages, drawing random weights shared by branch copies."""

    def __init__(self, rng, shared_blobs):
        self.rng = rng
        self.layers = []
        self.shared_blobs = shared_blobs  # "all", "none" or a set of base layer names
        self.weights = {}  # base name -> list of arrays (so copies share weights)

    def add(self, name, layer_type, bottom, top, suffix="", blobs=None, **params):
        layer = LayerParameter(name=name + suffix, type=layer_type)
        layer.bottom.extend(b + suffix for b in bottom)  # "data_res075" feeds the copies
        layer.top.extend(t + suffix for t in top)
        for key, values in params.items():
            _fill(getattr(layer, key), values)
        if blobs is not None:
            if not suffix:
                self.weights[name] = blobs()
            if not suffix or self.shared_blobs == "all" or (
                self.shared_blobs != "none" and name in self.shared_blobs
            ):
                for array in self.weights[name]:
                    array_to_blob(array, layer.blobs.add())
        self.layers.append(layer)
        return layer

    def conv_blobs(self, out_ch, in_ch, k, bias):
        std = math.sqrt(2.0 / (in_ch * k * k))

        def make():
            w = (self.rng.standard_normal((out_ch, in_ch, k, k)) * std).astype(np.float32)
            if not bias:
                return [w]
            return [w, (self.rng.standard_normal(out_ch) * 0.1).astype(np.float32)]

        return make

    def bn_blobs(self, ch):
        def make():
            factor = np.float32(self.rng.uniform(0.5, 2.0))  # Caffe's moving-average normaliser
            mean = self.rng.standard_normal(ch).astype(np.float32) * 0.1
            var = self.rng.uniform(0.5, 1.5, ch).astype(np.float32)
            return [mean * factor, var * factor, np.array([factor], np.float32)]

        return make

    def scale_blobs(self, ch, low, high):
        def make():
            return [
                self.rng.uniform(low, high, ch).astype(np.float32),
                (self.rng.standard_normal(ch) * 0.05).astype(np.float32),
            ]

        return make


def _fill(message, values):
    for key, value in values.items():
        target = getattr(message, key)
        if isinstance(value, list):
            target.extend(value)
        else:
            setattr(message, key, value)


def _conv_bn(w, name, bn_name, scale_name, bottom, out_ch, in_ch, k, stride, pad, dilation,
             relu, suffix, gamma=(0.8, 1.2)):
    conv = {"num_output": out_ch, "kernel_size": [k], "pad": [pad], "stride": [stride],
            "bias_term": False}
    if dilation != 1:
        conv["dilation"] = [dilation]
    w.add(name, "Convolution", [bottom], [name], suffix, w.conv_blobs(out_ch, in_ch, k, False),
          convolution_param=conv)
    w.add(bn_name, "BatchNorm", [name], [name], suffix, w.bn_blobs(out_ch),
          batch_norm_param={"use_global_stats": True})
    w.add(scale_name, "Scale", [name], [name], suffix, w.scale_blobs(out_ch, *gamma),
          scale_param={"bias_term": True})
    if relu:
        w.add(name + "_relu", "ReLU", [name], [name], suffix)


def _resnet_and_head(w, suffix, n_blocks, head, n_classes, rates, coco_head, width):
    bottom = "data"
    _conv_bn(w, "conv1", "bn_conv1", "scale_conv1", bottom, width, 3, 7, 2, 3, 1, True, suffix)
    w.add("pool1", "Pooling", ["conv1"], ["pool1"], suffix,
          pooling_param={"pool": POOL_MAX, "kernel_size": 3, "stride": 2, "pad": 1})
    bottom, in_ch = "pool1", width
    for stage, count in zip((2, 3, 4, 5), n_blocks):
        out_ch, dilation = STAGE_WIDTH[stage] * width, STAGE_DILATION[stage]
        mid = out_ch // 4
        for i, block in enumerate(caffe_block_names(count)):
            tag = f"{stage}{block}"
            stride = 2 if (stage == 3 and i == 0) else 1
            if i == 0:
                _conv_bn(w, f"res{tag}_branch1", f"bn{tag}_branch1", f"scale{tag}_branch1",
                         bottom, out_ch, in_ch, 1, stride, 0, 1, False, suffix)
                shortcut = f"res{tag}_branch1"
            else:
                shortcut = bottom
            _conv_bn(w, f"res{tag}_branch2a", f"bn{tag}_branch2a", f"scale{tag}_branch2a",
                     bottom, mid, in_ch, 1, stride, 0, 1, True, suffix)
            _conv_bn(w, f"res{tag}_branch2b", f"bn{tag}_branch2b", f"scale{tag}_branch2b",
                     f"res{tag}_branch2a", mid, mid, 3, 1, dilation, dilation, True, suffix)
            # A small gain on the residual branch keeps 33 blocks of random weights tame.
            _conv_bn(w, f"res{tag}_branch2c", f"bn{tag}_branch2c", f"scale{tag}_branch2c",
                     f"res{tag}_branch2b", out_ch, mid, 1, 1, 0, 1, False, suffix,
                     gamma=(0.1, 0.3))
            w.add(f"res{tag}", "Eltwise", [shortcut, f"res{tag}_branch2c"], [f"res{tag}"], suffix)
            w.add(f"res{tag}_relu", "ReLU", [f"res{tag}"], [f"res{tag}"], suffix)
            bottom, in_ch = f"res{tag}", out_ch
    if coco_head:
        # The COCO init model ends in a plain classifier instead of the ASPP.
        w.add(head, "Convolution", [bottom], [head], suffix,
              w.conv_blobs(n_classes, in_ch, 1, True),
              convolution_param={"num_output": n_classes, "kernel_size": [1]})
        return head
    branches = []
    for i, rate in enumerate(rates):
        name = f"{head}_c{i}"
        w.add(name, "Convolution", [bottom], [name], suffix,
              w.conv_blobs(n_classes, in_ch, 3, True),
              convolution_param={"num_output": n_classes, "kernel_size": [3], "pad": [rate],
                                 "dilation": [rate]})
        branches.append(name)
    w.add(head, "Eltwise", branches, [head], suffix,
          eltwise_param={"operation": ELTWISE_SUM})
    return head


def deeplab_caffe_layers(
    n_blocks=RESNET101_BLOCKS,
    n_classes=21,
    head="fc1_voc12",
    rates=(6, 12, 18, 24),
    coco_head=False,
    multiscale=True,
    shared_blobs=("conv1", "bn_conv1", "scale_conv1", "fc1_voc12_c0"),
    seed=0,
    base_width=64,
):
    """The layers of a DeepLab v2 (MSC) caffemodel with random weights, in Caffe's order.

    ``shared_blobs`` says which ``_res075`` / ``_res05`` copies carry (the
    shared) blobs: "all", "none" or a collection of base layer names. Returns
    the list of ``LayerParameter`` messages; the 1x output blob is ``head``.
    ``base_width`` narrows the net like the model's own argument (64 is ResNet-101).
    """
    if not isinstance(shared_blobs, str):
        shared_blobs = set(shared_blobs)
    w = _NetWriter(np.random.default_rng(seed), shared_blobs)
    w.add("data", "ImageSegData", [], ["data", "label"])
    if multiscale:
        w.add("data_res075", "Interp", ["data"], ["data_res075"],
              interp_param={"shrink_factor": 4, "zoom_factor": 3})
        w.add("data_res05", "Interp", ["data"], ["data_res05"],
              interp_param={"shrink_factor": 2})
    out = _resnet_and_head(w, "", n_blocks, head, n_classes, rates, coco_head, base_width)
    if multiscale:
        fused = [out]
        for suffix in BRANCH_SUFFIXES:
            _resnet_and_head(w, suffix, n_blocks, head, n_classes, rates, coco_head, base_width)
            w.add(f"{head}{suffix}_interp", "Interp", [head + suffix],
                  [f"{head}{suffix}_interp"], interp_param={"zoom_factor": 1})
            fused.append(f"{head}{suffix}_interp")
        w.add("fc_fusion", "Eltwise", fused, ["fc_fusion"],
              eltwise_param={"operation": ELTWISE_MAX})
        out = "fc_fusion"
    w.add("label_shrink", "Interp", ["label"], ["label_shrink"],
          interp_param={"shrink_factor": 8})
    w.add("loss", "SoftmaxWithLoss", [out, "label_shrink"], ["loss"])
    return w.layers


# -- NumPy reference of Caffe's layer semantics --------------------------------

def _blob(blob):
    shape = tuple(blob.shape.dim) if blob.HasField("shape") else (
        blob.num, blob.channels, blob.height, blob.width)
    return np.array(blob.data, dtype=np.float64).reshape(shape)


def _spatial(values, default):
    values = list(values)
    return (values[0], values[-1]) if values else (default, default)


def caffe_convolution(x, weight, bias, stride, pad, dilation):
    """Caffe's im2col convolution of one image ``x`` (C, H, W)."""
    channels, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    out_h = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    padded = np.zeros((channels, height + 2 * ph, width + 2 * pw))
    padded[:, ph:ph + height, pw:pw + width] = x
    columns = np.empty((channels, kh, kw, out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            columns[:, i, j] = padded[:, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
                                      j * dw:j * dw + sw * (out_w - 1) + 1:sw]
    out = weight.reshape(out_ch, -1) @ columns.reshape(-1, out_h * out_w)
    if bias is not None:
        out += bias[:, None]
    return out.reshape(out_ch, out_h, out_w)


def caffe_max_pool(x, kernel, stride, pad):
    """Caffe's MAX pooling: ceil-rounded output, last window clipped to start inside the image."""
    channels, height, width = x.shape

    def size(n):
        out = int(math.ceil((n + 2 * pad - kernel) / stride)) + 1
        if pad and (out - 1) * stride >= n + pad:
            out -= 1
        return out

    out_h, out_w = size(height), size(width)
    out = np.empty((channels, out_h, out_w))
    for i in range(out_h):
        h0 = i * stride - pad
        h1 = min(h0 + kernel, height + pad)
        h0, h1 = max(h0, 0), min(h1, height)
        for j in range(out_w):
            w0 = j * stride - pad
            w1 = min(w0 + kernel, width + pad)
            w0, w1 = max(w0, 0), min(w1, width)
            out[:, i, j] = x[:, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def caffe_batch_norm(x, layer):
    """use_global_stats BatchNorm: statistics are blobs 0 and 1 divided by blob 2 (0 -> 0)."""
    mean_sum, var_sum, factor = (_blob(b) for b in layer.blobs)
    factor = factor.reshape(-1)[0]
    scale = 0.0 if factor == 0 else 1.0 / factor
    mean = mean_sum.reshape(-1) * scale
    var = var_sum.reshape(-1) * scale
    eps = layer.batch_norm_param.eps
    return (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps)


def _run_layer(layer, inputs):
    kind = layer.type
    if kind == "Convolution":
        p = layer.convolution_param
        weight = _blob(layer.blobs[0])
        bias = _blob(layer.blobs[1]).reshape(-1) if p.bias_term else None
        return caffe_convolution(inputs[0], weight, bias, _spatial(p.stride, 1),
                                 _spatial(p.pad, 0), _spatial(p.dilation, 1))
    if kind == "BatchNorm":
        return caffe_batch_norm(inputs[0], layer)
    if kind == "Scale":
        gamma = _blob(layer.blobs[0]).reshape(-1)[:, None, None]
        out = inputs[0] * gamma
        if layer.scale_param.bias_term:
            out = out + _blob(layer.blobs[1]).reshape(-1)[:, None, None]
        return out
    if kind == "ReLU":
        slope = layer.relu_param.negative_slope
        return np.where(inputs[0] > 0, inputs[0], inputs[0] * slope)
    if kind == "Pooling":
        p = layer.pooling_param
        assert p.pool == POOL_MAX
        return caffe_max_pool(inputs[0], p.kernel_size, p.stride, p.pad)
    if kind == "Eltwise":
        op = layer.eltwise_param.operation
        if op == ELTWISE_SUM:
            coeffs = list(layer.eltwise_param.coeff) or [1.0] * len(inputs)
            return sum(c * x for c, x in zip(coeffs, inputs))
        if op == ELTWISE_MAX:
            return np.maximum.reduce(inputs)
        return np.multiply.reduce(inputs)
    return None  # data, Interp, loss layers: not part of the single-scale forward


def caffe_forward(layers, image, skip=lambda name: False):
    """Run ``layers`` on one (C, H, W) ``image`` fed as blob "data"; return all blobs.

    Layers for which ``skip(name)`` holds, layers of types the reference does
    not model and layers whose inputs are missing are passed over, so the
    single-scale path of an MSC net can be computed on its own.
    """
    blobs = {"data": np.asarray(image, dtype=np.float64)}
    for layer in layers:
        if skip(layer.name) or any(b not in blobs for b in layer.bottom) or not layer.bottom:
            continue
        out = _run_layer(layer, [blobs[b] for b in layer.bottom])
        if out is not None:
            blobs[layer.top[0]] = out
    return blobs
