"""Turn the layers of a DeepLab v2 ``.caffemodel`` into a state dict for our model.

Strict both ways, because a silently half-loaded network trains and evaluates without any error,
only worse: every parameter-carrying Caffe layer maps to a module (or is skipped on purpose and
reported), every target tensor is filled exactly once with its exact shape, and the file's layer
geometry must equal the module's. docs/convert.md ("Mapping rules") says how each layer is read.
"""

from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from .names import BATCHNORM, CONV, POOL, SCALE, SKIP, caffe_target, is_multiscale_copy
from .protobuf import POOL_MAX, ROUND_CEIL
from ..utils.errors import CheckpointError, ConversionError

BATCHNORM_EPS_RTOL = 1e-5  # float32 storage of 1e-5 differs from it by ~3e-8 (relative)
BN_BUFFER_COUNTER = "num_batches_tracked"


@dataclass
class ConversionSummary:
    """What was read, written and skipped, for the report printed by convert.py."""

    source: str
    layers_read: int = 0
    layers_mapped: int = 0
    tensors_written: int = 0
    values_written: int = 0
    counters_zeroed: int = 0
    skipped: dict = field(default_factory=lambda: defaultdict(list))  # reason -> layer names
    checked: list = field(default_factory=list)  # geometry-only layers that were verified
    classifier: list = field(default_factory=list)  # (layer name, outputs) of a skipped head

    def lines(self):
        out = [f"read {self.layers_read} layers from {self.source}",
               f"mapped {self.layers_mapped} parameter layers onto {self.tensors_written} tensors "
               f"({self.values_written:,} values); {self.counters_zeroed} BatchNorm "
               f"{BN_BUFFER_COUNTER} counters set to 0"]
        out += [f"checked {line}" for line in self.checked]
        for reason, names in sorted(self.skipped.items()):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            noun = "layer" if len(names) == 1 else "layers"
            out.append(f"skipped {len(names)} {noun}: {reason} ({shown})")
        return out


def _pair(values, name, default):
    """Caffe's repeated spatial setting: none -> default, one -> square, two -> (h, w)."""
    values = [int(v) for v in values] or [default]
    if len(values) <= 2:
        return (values[0], values[-1])
    raise ValueError(f"{name} has {len(values)} values, a 2-D layer takes 1 or 2")


def _setting(param, name, hw_prefix, default):
    """A spatial setting as an (h, w) pair: its ``<hw_prefix>_h``/``_w`` fields when either is
    set, else ``name`` (repeated in ConvolutionParameter, a single value in PoolingParameter)."""
    if param.HasField(f"{hw_prefix}_h") or param.HasField(f"{hw_prefix}_w"):
        return (getattr(param, f"{hw_prefix}_h"), getattr(param, f"{hw_prefix}_w"))
    values = getattr(param, name)
    return _pair([values] if isinstance(values, int) else values, name, default)


def _geometry(param):
    """(kernel, stride, pad) of a Convolution- or PoolingParameter as (h, w) pairs."""
    return (_setting(param, "kernel_size", "kernel", 0), _setting(param, "stride", "stride", 1),
            _setting(param, "pad", "pad", 0))


def _as_pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _strip_leading_ones(shape):
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


class _Converter:
    def __init__(self, layers, model, classifier, backbone_only, source):
        self.layers, self.classifier = layers, classifier
        self.backbone_only, self.source = backbone_only, source
        self.modules = dict(model.named_modules())
        prefix = "base.backbone." if backbone_only else ""
        self.target = OrderedDict((k, v) for k, v in model.state_dict().items()
                                  if k.startswith(prefix))
        self.filled = {}  # key -> Caffe layer that filled it
        self.out = {}
        self.batchnorm_seen = set()  # module paths
        self.summary = ConversionSummary(source=source)
        self.handlers = {CONV: self.convolution, BATCHNORM: self.batchnorm, SCALE: self.scale,
                         POOL: self.pooling}

    def fail(self, layer, problem):
        raise ConversionError(f"{self.source}: layer {layer.name!r} ({layer.type}): {problem}")

    def fill(self, layer, key, array, what):
        if key not in self.target:
            self.fail(layer, f"maps to {key}, which is not a tensor of the target model")
        if key in self.filled:
            self.fail(layer, f"{key} was already filled by layer {self.filled[key]!r}")
        expected, got = tuple(self.target[key].shape), tuple(array.shape)
        if got != expected and _strip_leading_ones(got) != _strip_leading_ones(expected):
            if (key.startswith("base.aspp.") and key.endswith("weight") and len(got) == 4
                    and got[0] != expected[0]):
                self.fail(layer, f"predicts {got[0]} classes but the model has {expected[0]} "
                                 "classes")
            self.fail(layer, f"{what} has shape {list(got)} but {key} needs {list(expected)}")
        self.out[key] = torch.from_numpy(np.ascontiguousarray(array).reshape(expected))
        self.filled[key] = layer.name
        self.summary.tensors_written += 1
        self.summary.values_written += int(array.size)

    def expect_blobs(self, layer, count):
        if layer.n_blobs != count:
            self.fail(layer, f"has {layer.n_blobs} blobs, expected {count}")

    def check_geometry(self, layer, path, got, module_values):
        """Fail unless the file's (kernel, stride, padding[, dilation]) are the module's."""
        names = ("kernel size", "stride", "padding", "dilation")
        for name, value, want in zip(names, got, (_as_pair(v) for v in module_values)):
            if tuple(value) != want:
                self.fail(layer, f"{name} {tuple(value)} in the file, {want} in {path}")

    def module(self, layer, path, kinds):
        module = self.modules.get(path)
        if module is None:
            self.fail(layer, f"maps to module {path}, which the model does not have")
        if not isinstance(module, kinds):
            self.fail(layer, f"maps to {path}, a {type(module).__name__}")
        return module

    def convolution(self, layer, path):
        conv = self.module(layer, path, nn.Conv2d)
        param = layer.proto.convolution_param
        try:
            geometry = _geometry(param) + (_pair(param.dilation, "dilation", 1),)
        except ValueError as e:
            self.fail(layer, str(e))
        self.check_geometry(layer, path, geometry,
                            (conv.kernel_size, conv.stride, conv.padding, conv.dilation))
        if param.group != conv.groups or param.axis != 1:
            self.fail(layer, f"group {param.group} / axis {param.axis} is not supported")
        has_bias = conv.bias is not None
        if param.bias_term != has_bias:
            self.fail(layer, f"bias_term is {param.bias_term} but {path} has_bias={has_bias}")
        self.expect_blobs(layer, 2 if has_bias else 1)
        weight = layer.blob(0)
        if param.HasField("num_output") and weight.ndim and param.num_output != weight.shape[0]:
            self.fail(layer, f"num_output {param.num_output} but weight blob {weight.shape}")
        self.fill(layer, f"{path}.weight", weight, "weight blob 0")
        if has_bias:
            self.fill(layer, f"{path}.bias", layer.blob(1), "bias blob 1")

    def batchnorm(self, layer, path):
        bn = self.module(layer, path, nn.BatchNorm2d)
        eps = layer.proto.batch_norm_param.eps
        if abs(eps - bn.eps) > BATCHNORM_EPS_RTOL * bn.eps:
            self.fail(layer, f"eps {eps:g} in the file, {bn.eps:g} in {path}")
        self.expect_blobs(layer, 3)
        factor_blob = layer.blob(2)
        if factor_blob.size != 1:
            self.fail(layer, f"moving-average factor blob 2 has {factor_blob.size} values, not 1")
        factor = float(factor_blob.reshape(-1)[0])
        scale = np.float32(0.0 if factor == 0 else 1.0 / factor)
        self.fill(layer, f"{path}.running_mean", layer.blob(0) * scale, "mean blob 0")
        self.fill(layer, f"{path}.running_var", layer.blob(1) * scale, "variance blob 1")
        self.batchnorm_seen.add(path)

    def scale(self, layer, path):
        self.module(layer, path, nn.BatchNorm2d)
        if path not in self.batchnorm_seen:
            self.fail(layer, f"no BatchNorm layer for {path} comes before this Scale layer")
        param = layer.proto.scale_param
        if not param.bias_term or param.axis != 1 or param.num_axes != 1:
            self.fail(layer, "expected a per-channel Scale with bias (axis 1, num_axes 1, "
                             "bias_term true)")
        self.expect_blobs(layer, 2)
        self.fill(layer, f"{path}.weight", layer.blob(0), "scale blob 0")
        self.fill(layer, f"{path}.bias", layer.blob(1), "bias blob 1")

    def pooling(self, layer, path):
        pool = self.module(layer, path, nn.MaxPool2d)
        param = layer.proto.pooling_param
        if param.pool != POOL_MAX or param.global_pooling:
            self.fail(layer, f"is not a windowed MAX pooling, but {path} is")
        kernel, stride, pad = _geometry(param)
        self.check_geometry(layer, path, (kernel, stride, pad),
                            (pool.kernel_size, pool.stride, pool.padding))
        if (param.round_mode == ROUND_CEIL) != bool(pool.ceil_mode):
            self.fail(layer, f"rounds output sizes differently from {path} (ceil_mode)")
        if _as_pair(pool.dilation) != (1, 1):
            self.fail(layer, f"{path} is dilated, Caffe pooling never is")
        self.expect_blobs(layer, 0)
        self.summary.checked.append(f"{layer.name}: MAX {kernel[0]}x{kernel[1]} stride "
                                    f"{stride[0]} pad {pad[0]} ceil -> {path}")

    def run(self):
        summary = self.summary
        for layer in self.layers:
            summary.layers_read += 1
            target = caffe_target(layer.name, layer.type, self.classifier, self.backbone_only)
            if target is None:
                if layer.n_blobs:
                    hint = (f" (this preset's classifier is {self.classifier}_c0.., is --dataset "
                            "right?)" if layer.name.startswith("fc") else "")
                    self.fail(layer, f"carries {layer.n_blobs} blobs but no rule maps it to "
                                     f"the model{hint}")
                summary.skipped[f"parameter-free {layer.type or 'untyped'}"].append(layer.name)
                continue
            if target.kind == SKIP:
                summary.skipped[target.reason].append(layer.name)
                if is_multiscale_copy(layer.name) or not layer.n_blobs:
                    continue
                outputs = layer.blob_shape(0)[:1] or (layer.proto.convolution_param.num_output,)
                summary.classifier.append((layer.name, int(outputs[0])))
                continue
            try:
                self.handlers[target.kind](layer, target.module)
            except CheckpointError as e:  # a blob that cannot be read: the file does not fit
                raise ConversionError(str(e)) from None
            summary.layers_mapped += target.kind != POOL
        for key, value in self.target.items():
            if key.endswith("." + BN_BUFFER_COUNTER) and key not in self.out:
                self.out[key] = torch.zeros(value.shape, dtype=value.dtype, device="cpu")
                summary.counters_zeroed += 1
        if missing := [k for k in self.target if k not in self.out]:
            last = self.layers[-1].name if self.layers else "none"
            raise ConversionError(
                f"{self.source}: {len(missing)} tensors of the model got no weights from the "
                f"file (first: {missing[0]}); the last layer read was {last!r} "
                "(truncated or incomplete file, or a model deeper than the file?)")
        return OrderedDict((k, self.out[k]) for k in self.target), summary


def convert_caffe_layers(layers, model, classifier, backbone_only, source="<caffemodel>"):
    """Map Caffe ``layers`` (from :func:`read_caffemodel`) onto ``model``'s state dict (exactly the
    ``base.backbone.*`` keys with ``backbone_only``): ``(state_dict, summary)``. ``model`` is only
    inspected (module types, geometry, tensor shapes), so it may live on the meta device."""
    return _Converter(layers, model, classifier, backbone_only, str(source)).run()
