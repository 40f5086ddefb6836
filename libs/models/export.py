"""ONNX export of DeepLab v2, v3 and v3+ (single-scale or MSC) with dynamic batch, height and width.

The graph takes ``image`` (N x 3 x H x W float32, BGR minus the mean) and gives ``logits``
(N x C x h x w); its BatchNorms are folded first (``prepared.fold_batchnorm``). The TorchScript
exporter writes it (the torch.export one needs ``onnxscript``, not in requirements.txt). Why the
MSC sizes are exact integer arithmetic: docs/inference.md, "Exact MSC sizes in the graph".
"""

import copy
import time
import warnings
from collections import namedtuple
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from ..utils.atomic import atomic_path
from ..utils.errors import ConversionError, first_line
from ..utils.sizes import size_text
from .msc import MSC
from .prepared import InferenceModel, fold_batchnorm
from .zoo import results_stem

LINE_LIMIT = 200  # characters of a torch/ONNX error message quoted in a one-line report

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXPORTER = "torchscript"  # recorded in ExportInfo and the file
MAX_SCALE_DENOMINATOR = 2 ** 16
# metadata_props of the exported file, read back by libs/inference/onnx_model.py
META_N_CLASSES = "deeplab.n_classes"
META_MSC = "deeplab.msc"  # "1" for the multi-scale model, "0" for the single-scale network
META_GEOMETRY = "deeplab.msc_geometry"
META_SCALES = "deeplab.msc_scales"
META_EXPORTER = "deeplab.exporter"
META_OUTPUT_STRIDE = "deeplab.output_stride"  # inputs padded to s k + 1 (geometry.py)


# errors: {(height, width): relative error} of the parity check, if one ran
ExportInfo = namedtuple("ExportInfo", "exporter opset seconds n_bytes n_folded errors")


def dyadic_scale(scale):
    """``(p, q)``: ``scale == p / q`` exactly, ``q`` a power of two up to 2**16 (or a
    ConversionError)."""
    fraction = Fraction(float(scale))
    if not 0 < fraction < 64 or fraction.denominator > MAX_SCALE_DENOMINATOR:
        raise ConversionError(f"MSC scale {scale!r} cannot be exported exactly: its caffe-geometry "
                          f"size needs a scale k / 2**m below 64 with 2**m <= "
                          f"{MAX_SCALE_DENOMINATOR}")
    return fraction.numerator, fraction.denominator


def caffe_scaled_side_exact(side, p, q):
    """``round((side - 1) * p / q) + 1`` (half to even) with integer operations only.

    Works on ints, symbolic sizes and integer tensors, so the size follows the input's shape in
    the graph (the derivation: docs/inference.md, "Exact MSC sizes in the graph").
    """
    n = (side - 1) * p
    floor = n // q
    rest = n - floor * q
    return floor + (2 * rest + floor % 2 + q - 1) // (2 * q) + 1


class ExportableMSC(MSC):
    """The eval-mode MSC with its extra-scale sizes written for export (the same function)."""

    def __init__(self, base, scales, geometry):
        super().__init__(base, scales, geometry)
        self.fractions = [dyadic_scale(s) for s in self.scales] if geometry == "caffe" else []

    def resize_input(self, x, index):
        if self.geometry != "caffe":
            return super().resize_input(x, index)
        p, q = self.fractions[index]
        size = [caffe_scaled_side_exact(side, p, q) for side in x.shape[-2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def exportable_network(model):
    """``(network, metadata, folded BatchNorms)``: a float32 CPU copy of ``model`` ready to export.

    ``model``: an MSC, its ``.base``, an :class:`InferenceModel` of either, or a DataParallel/DDP
    wrapper of them.
    """
    net = getattr(model, "module", model)
    if isinstance(net, InferenceModel):
        net = net.net
    net = copy.deepcopy(net).float().cpu().eval()
    n_folded = fold_batchnorm(net)
    net.requires_grad_(False)
    if isinstance(net, MSC):
        n_classes, msc = net.base.n_classes, "1"
        meta = {META_GEOMETRY: net.geometry, META_SCALES: ",".join(repr(s) for s in net.scales)}
        net = ExportableMSC(net.base, net.scales, net.geometry).eval()
    else:
        n_classes, msc, meta = getattr(net, "n_classes", None), "0", {}
    if n_classes is None:
        raise ConversionError(f"cannot export a {type(net).__name__}: expected a DeepLab network "
                          "or its MSC")
    meta.update({META_N_CLASSES: str(int(n_classes)), META_MSC: msc, META_EXPORTER: EXPORTER,
                 META_OUTPUT_STRIDE: str(int(getattr(net, "output_stride", 8)))})
    return net, meta, n_folded


def input_is_dynamic(proto):
    """Whether the graph input's batch, height and width are symbolic (not frozen numbers)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 4 and all(not dims[i].HasField("dim_value") for i in (0, 2, 3))


def export_onnx(model, path, example_size=(321, 321), opset=None, check_sizes=(), rtol=1e-4):
    """Export ``model`` (eval mode: an MSC or its ``.base``) to the ONNX file ``path``, atomically.

    Batch, height and width stay dynamic (``example_size`` is only the size traced); the file
    carries the class count and the MSC geometry and passes ``onnx.checker``, and with
    ``check_sizes`` ONNX Runtime must match ``model`` there (:func:`check_onnx_parity`) before it
    takes its place. On :class:`ConversionError` or :class:`ConversionError` nothing is written.
    """
    start = time.perf_counter()
    net, meta, n_folded = exportable_network(model)
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "logit_height", 3: "logit_width"}}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # "legacy TorchScript-based export"
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("always", torch.jit.TracerWarning)  # a value frozen in the graph
            torch.onnx.export(net, (torch.zeros(1, 3, *example_size),), str(tmp), dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=opset)
        frozen = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        if frozen:
            raise ConversionError(f"the TorchScript exporter froze a value into the graph: "
                              f"{first_line(frozen[0].message, LINE_LIMIT)}")
        proto = onnx.load(str(tmp))
        if not input_is_dynamic(proto):
            raise ConversionError(f"{EXPORTER} exporter froze the input size into the graph")
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            raise ConversionError(f"{path}: the exported graph fails onnx.checker: "
                              f"{first_line(e, LINE_LIMIT)}") from None
        onnx.save(proto, str(tmp))
        seconds = time.perf_counter() - start
        errors = check_onnx_parity(model, tmp, check_sizes, rtol, name=path) if check_sizes else {}
    opset_used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportInfo(EXPORTER, opset_used, seconds, Path(path).stat().st_size, n_folded, errors)


def check_onnx_parity(model, path, sizes, rtol=1e-4, name=None):
    """``{(h, w): max|ort - torch| / max|torch|}`` for random inputs at each of ``sizes``.

    ONNX Runtime runs on the CPU, ``model`` on its own device. :class:`ConversionError` (one line
    naming ``name``, default ``path``) when an error exceeds ``rtol`` or the shapes differ.
    """
    import onnxruntime

    name = path if name is None else name
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    device = next(getattr(model, "module", model).parameters()).device
    errors = {}
    for index, size in enumerate(sizes):
        size = tuple(int(s) for s in size)
        generator = torch.Generator().manual_seed(index)  # in a mean-subtracted image's range
        x = torch.rand(1, 3, *size, generator=generator) * 255 - 127.5
        ours = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        with torch.inference_mode():
            reference = model(x.to(device)).float().cpu().numpy()
        if ours.shape != reference.shape:
            raise ConversionError(f"{name}: ONNX Runtime gives logits of shape {ours.shape} at "
                              f"{size_text(*size)}, PyTorch {reference.shape}")
        errors[size] = float(np.abs(ours - reference).max() / np.abs(reference).max())
    worst = max(errors, key=errors.get, default=None)
    if worst is not None and errors[worst] > rtol:
        raise ConversionError(f"{name}: ONNX Runtime differs from PyTorch by {errors[worst]:.1e} "
                          f"(max|a-b|/max|b|) at {worst[0]}x{worst[1]}, tolerance {rtol:.0e}")
    return errors


def default_onnx_path(model_path, single_scale=False, released_dir="."):
    """``<model stem>[_single].onnx`` next to the model (a released name: in ``released_dir``)."""
    model_path = results_stem(model_path, released_dir)
    return model_path.with_name(model_path.stem + ("_single" if single_scale else "") + ".onnx")

