"""ONNX export of DeepLab v2, v3 and v3+ (single-scale or MSC) with dynamic batch, height and width.

The exported graph takes ``image`` (N x 3 x H x W float32, BGR with the mean
subtracted, as the PyTorch model) and gives ``logits`` (N x C x h x w float32,
cell ``i`` on input pixel ``s i``, ``s`` the logits' stride: 8 for v2, 16 or 8
for v3, 4 for v3+; the stride inputs are padded to is recorded as
``deeplab.output_stride``). Its frozen BatchNorms are folded into the
convolutions first (:func:`~libs.models.prepared.fold_batchnorm`), which
changes only float rounding.

Exporters. :func:`export_onnx` first tries the ``torch.export``-based exporter
(``torch.onnx.export(dynamo=True)`` with ``dynamic_shapes``). It needs the
``onnxscript`` package, which ``requirements.txt`` does not install (on a
2-core CPU it also takes 20-50 s for the tiny test network, against 1-2 s), so
in a plain install it fails at once and the TorchScript exporter
(``dynamo=False`` with ``dynamic_axes``) writes the file; ``exporter`` picks
one explicitly. Both were checked to give the same function. Each
exporter uses its own default opset of the installed torch unless ``opset`` is
given, and the file records which exporter wrote it.

MSC sizes come from the runtime shape. The MSC's caffe geometry sizes an
extra scale ``s`` as ``round((S - 1) * s) + 1`` with Python's round (half to
even), written with ``int()``, which a tracer would freeze to the example
size. Here it is computed with integer arithmetic only, which both exporters
record as shape operations: every float is a dyadic fraction ``s = p / q``
(``q`` a power of two); for ``q <= 2**16``, ``s < 64`` and sides below
``2**31`` the product ``(S - 1) * s`` is exact in a double, so Python rounds the exact
rational ``(S - 1) * p / q``, and :func:`caffe_scaled_side_exact` rounds that
rational half to even with floor division only: it is Python's result for
every side (a test compares all sides up to 5000). A scale with a larger
denominator (0.3 is 5404319552844595 / 2**54) is refused with one line
rather than exported approximately. The pytorch geometry's
``F.interpolate(scale_factor=s)`` exports as a Resize by scales, which computes
``floor(S * s)`` and maps coordinates by ``s`` at run time, as PyTorch does.
After the export, the input's batch, height and width must be symbolic in the
file, else it is refused; :func:`check_onnx_parity` then compares ONNX Runtime
with PyTorch at sizes other than the example.
"""

import copy
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.atomic import atomic_path
from ..utils.errors import DeepLabError, first_line
from ..utils.sizes import size_text
from .geometry import check_geometry, msc_resize_input, msc_resize_logits
from .prepared import InferenceModel, fold_batchnorm
from .msc import MSC
from .zoo import results_stem

LINE_LIMIT = 200  # characters of a torch/ONNX error message quoted in a one-line report

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXPORTERS = ("auto", "dynamo", "torchscript")
MAX_SCALE_DENOMINATOR = 2 ** 16
# metadata_props of the exported file, read back by libs/inference/onnx_model.py
META_N_CLASSES = "deeplab.n_classes"
META_MSC = "deeplab.msc"  # "1" for the multi-scale model, "0" for the single-scale network
META_GEOMETRY = "deeplab.msc_geometry"
META_SCALES = "deeplab.msc_scales"
META_EXPORTER = "deeplab.exporter"
META_OUTPUT_STRIDE = "deeplab.output_stride"  # inputs padded to s k + 1 (geometry.py)


class ExportError(DeepLabError, ValueError):
    """A model or an output that cannot be exported to ONNX as asked."""


class ParityError(ExportError):
    """ONNX Runtime's logits differ from PyTorch's beyond the tolerance."""


class ExportInfo(NamedTuple):
    path: Path
    exporter: str
    opset: int
    seconds: float
    n_bytes: int
    n_folded: int
    errors: dict  # {(height, width): relative error} of the parity check, if one ran


def dyadic_scale(scale):
    """``(p, q)``: ``scale == p / q`` exactly, ``q`` a power of two up to 2**16, or ExportError."""
    fraction = Fraction(float(scale))
    if not 0 < fraction < 64 or fraction.denominator > MAX_SCALE_DENOMINATOR:
        raise ExportError(f"MSC scale {scale!r} cannot be exported exactly: its caffe-geometry "
                          f"size needs a scale k / 2**m below 64 with 2**m <= "
                          f"{MAX_SCALE_DENOMINATOR}")
    return fraction.numerator, fraction.denominator


def caffe_scaled_side_exact(side, p, q):
    """``round((side - 1) * p / q) + 1`` (half to even) with integer operations only.

    Works on ints, on exporters' symbolic sizes and on integer tensors, so the
    size follows the input's shape in an exported graph. With ``f`` the floor
    and ``r`` the remainder of ``(side - 1) * p / q``, one is added when
    ``2r > q``, or ``2r == q`` and ``f`` is odd: that is ``2r + f % 2 >= q + 1``,
    i.e. ``(2r + f % 2 + q - 1) // (2q) == 1`` (the numerator stays below 4q).
    """
    n = (side - 1) * p
    floor = n // q
    rest = n - floor * q
    return floor + (2 * rest + floor % 2 + q - 1) // (2 * q) + 1


class ExportableMSC(nn.Module):
    """The eval-mode MSC forward with its extra-scale sizes written for export (same function)."""

    def __init__(self, base, scales, geometry):
        super().__init__()
        self.base = base
        self.scales = [float(s) for s in scales]
        self.geometry = check_geometry(geometry)
        self.fractions = [dyadic_scale(s) for s in self.scales] if geometry == "caffe" else []
        self.output_stride = getattr(base, "output_stride", 8)

    def resize_input(self, x, index):
        if self.geometry != "caffe":
            return msc_resize_input(x, self.scales[index], self.geometry)
        p, q = self.fractions[index]
        size = [caffe_scaled_side_exact(side, p, q) for side in x.shape[-2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def forward(self, x):
        full = self.base(x)
        fused = full
        for index in range(len(self.scales)):
            logits = self.base(self.resize_input(x, index))
            fused = torch.maximum(fused, msc_resize_logits(logits, full.shape[-2:], self.geometry))
        return fused


def exportable_network(model):
    """``(network, metadata, folded BatchNorms)``: a float32 CPU copy of ``model`` ready to export.

    ``model`` is an MSC, a single-scale network (an MSC's ``.base``: DeepLab
    v2, v3 or v3+), an :class:`InferenceModel` of either, or a
    DataParallel/DDP wrapper of them.
    """
    net = getattr(model, "module", model)
    if isinstance(net, InferenceModel):
        net = net.net
    net = copy.deepcopy(net).float().cpu().eval()
    n_folded = fold_batchnorm(net)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    if isinstance(net, MSC):
        n_classes, msc = net.base.n_classes, "1"
        meta = {META_GEOMETRY: net.geometry, META_SCALES: ",".join(repr(s) for s in net.scales)}
        net = ExportableMSC(net.base, net.scales, net.geometry).eval()
    else:
        n_classes, msc, meta = getattr(net, "n_classes", None), "0", {}
    if n_classes is None:
        raise ExportError(f"cannot export a {type(net).__name__}: expected a DeepLab network "
                          "or its MSC")
    meta.update({META_N_CLASSES: str(int(n_classes)), META_MSC: msc,
                 META_OUTPUT_STRIDE: str(int(getattr(net, "output_stride", 8)))})
    return net, meta, n_folded


def _export_dynamo(net, example, path, opset):
    from torch.export import Dim

    dynamic = ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    torch.onnx.export(net, (example,), str(path), dynamo=True, dynamic_shapes=dynamic,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                      external_data=False, verbose=False)


def _export_torchscript(net, example, path, opset):
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "logit_height", 3: "logit_width"}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", FutureWarning)  # "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("always", torch.jit.TracerWarning)  # a value frozen into the graph
        torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset)
    frozen = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if frozen:
        raise ExportError(f"the TorchScript exporter froze a value into the graph: "
                          f"{first_line(frozen[0].message, LINE_LIMIT)}")


def input_is_dynamic(proto):
    """Whether the graph input's batch, height and width are symbolic (not frozen numbers)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 4 and all(not dims[i].HasField("dim_value") for i in (0, 2, 3))


def _write(net, example_size, tmp, opset, exporter):
    """Export with ``exporter`` into ``tmp``; returns the loaded ModelProto, or raises.

    The example runs through the network once: a batch of one image for the
    TorchScript exporter, of two for torch.export, which would take a size of 1
    for a constant.
    """
    run = _export_dynamo if exporter == "dynamo" else _export_torchscript
    example = torch.zeros(2 if exporter == "dynamo" else 1, 3, *example_size)
    with torch.no_grad():
        run(net, example, tmp, opset)
    proto = onnx.load(str(tmp))
    if not input_is_dynamic(proto):
        raise ExportError(f"{exporter} exporter froze the input size into the graph")
    return proto


def _export_any(net, example_size, tmp, opset, exporter, log):
    """The ModelProto and the exporter that wrote it; ``auto`` falls back from dynamo."""
    if exporter != "auto":
        return _write(net, example_size, tmp, opset, exporter), exporter
    try:
        return _write(net, example_size, tmp, opset, "dynamo"), "dynamo"
    except Exception as e:  # any failure of the newer exporter: the TorchScript one is next
        what = "unavailable" if isinstance(e, ImportError) else "failed"
        log(f"dynamo exporter {what} ({first_line(e, LINE_LIMIT)}); "
            "using the TorchScript exporter")
        return _write(net, example_size, tmp, opset, "torchscript"), "torchscript"


def export_onnx(model, path, example_size=(321, 321), opset=None, exporter="auto",
                check_sizes=(), rtol=1e-4, log=lambda line: None):
    """Export ``model`` (eval mode: an MSC or its ``.base``) to the ONNX file ``path``, atomically.

    Batch, height and width stay dynamic; ``example_size`` is only the size
    traced. The file carries the class count and the MSC geometry in its
    ``metadata_props`` and passes ``onnx.checker.check_model``; with
    ``check_sizes`` ONNX Runtime must also match ``model`` at those sizes
    (:func:`check_onnx_parity`) before the file takes its place. Returns an
    :class:`ExportInfo` (``errors``: the parity check's). Raises
    :class:`ExportError` for a model or scale that cannot be exported exactly
    and :class:`ParityError`; nothing is written then.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    start = time.perf_counter()
    net, meta, n_folded = exportable_network(model)
    with atomic_path(path) as tmp:
        proto, used = _export_any(net, tuple(example_size), tmp, opset, exporter, log)
        meta[META_EXPORTER] = used
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"{path}: the exported graph fails onnx.checker: "
                              f"{first_line(e, LINE_LIMIT)}") from None
        onnx.save(proto, str(tmp))
        seconds = time.perf_counter() - start
        errors = check_onnx_parity(model, tmp, check_sizes, rtol, name=path) if check_sizes else {}
    opset_used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportInfo(Path(path), used, opset_used, seconds, Path(path).stat().st_size, n_folded,
                      errors)


def random_input(batch, size, seed):
    """A reproducible batch in the range of a mean-subtracted 8-bit image."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=generator) * 255 - 127.5


def check_onnx_parity(model, path, sizes, rtol=1e-4, batch=1, seed=0, threads=None, name=None):
    """``{(h, w): max|ort - torch| / max|torch|}`` for random inputs at each of ``sizes``.

    ONNX Runtime runs ``path`` on the CPU (``threads`` intra-op threads, its
    default when None); ``model`` runs in PyTorch on its own device. Raises
    :class:`ParityError` (one line naming ``name``, default ``path``, and the
    worst size) when an error exceeds ``rtol``, or when the shapes differ.
    """
    import onnxruntime

    name = path if name is None else name
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    device = next(getattr(model, "module", model).parameters()).device
    errors = {}
    for index, size in enumerate(sizes):
        size = tuple(int(s) for s in size)
        x = random_input(batch, size, seed + index)
        ours = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        with torch.inference_mode():
            reference = model(x.to(device)).float().cpu().numpy()
        if ours.shape != reference.shape:
            raise ParityError(f"{name}: ONNX Runtime gives logits of shape {ours.shape} at "
                              f"{size_text(*size)}, PyTorch {reference.shape}")
        errors[size] = float(np.abs(ours - reference).max() / np.abs(reference).max())
    worst = max(errors, key=errors.get, default=None)
    if worst is not None and errors[worst] > rtol:
        raise ParityError(f"{name}: ONNX Runtime differs from PyTorch by {errors[worst]:.1e} "
                          f"(max|a-b|/max|b|) at {worst[0]}x{worst[1]}, tolerance {rtol:.0e}")
    return errors


def default_onnx_path(model_path, single_scale=False, released_dir="."):
    """``<model stem>[_single].onnx`` next to the model (a released name: in ``released_dir``)."""
    model_path = results_stem(model_path, released_dir)
    return model_path.with_name(model_path.stem + ("_single" if single_scale else "") + ".onnx")


__all__ = ["EXPORTERS", "ExportError", "ExportInfo", "ExportableMSC", "ParityError",
           "caffe_scaled_side_exact", "check_onnx_parity", "default_onnx_path", "dyadic_scale",
           "export_onnx", "exportable_network", "input_is_dynamic"]
