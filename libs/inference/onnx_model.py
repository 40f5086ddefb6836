"""An exported ONNX model run by ONNX Runtime, in place of the PyTorch module: called like the
network, with the attributes ``predict.py`` reads, from the metadata ``export_onnx`` wrote."""

from pathlib import Path

import numpy as np
import torch

from ..models.export import (INPUT_NAME, LINE_LIMIT, META_GEOMETRY, META_MSC, META_N_CLASSES,
                             META_OUTPUT_STRIDE, OUTPUT_NAME)
from ..models.geometry import MSC_GEOMETRIES
from ..utils.errors import CheckpointError, first_line


def _session(path, device, threads):
    """An ONNX Runtime session with CUDA first for a CUDA device (where the build has it)."""
    import onnxruntime

    wanted = ["CUDAExecutionProvider"] if torch.device(device).type == "cuda" else []
    available = onnxruntime.get_available_providers()
    providers = [p for p in wanted if p in available] + ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not for the user
    # Idle worker threads spin-wait by default, taking the cores from whatever runs next in the
    # process (the CRF, PyTorch in the benchmark); a segmentation network gains nothing from it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # ONNX Runtime raises its own exception types for a bad file
        reason = first_line(e, LINE_LIMIT).replace(f"Load model from {path} failed:", "")
        raise CheckpointError(f"{path}: not a usable ONNX model ({reason})") from None


def _read_metadata(path, session):
    """``(n_classes, geometry or None, output stride)`` from the file's metadata, or
    CheckpointError. Files exported before v3 existed carry no stride: DeepLab v2's 8."""
    meta = session.get_modelmeta().custom_metadata_map
    try:
        n_classes = int(meta[META_N_CLASSES])
        msc = meta[META_MSC] == "1"
        geometry = meta[META_GEOMETRY] if msc else None
        output_stride = int(meta.get(META_OUTPUT_STRIDE, 8))
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: no DeepLab metadata ({META_N_CLASSES}, {META_MSC}); "
                             f"export the model with export.py") from None
    if geometry is not None and geometry not in MSC_GEOMETRIES:
        raise CheckpointError(f"{path}: unknown MSC geometry {geometry!r} in its metadata")
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise CheckpointError(f"{path}: expected input {INPUT_NAME!r} and output "
                             f"{OUTPUT_NAME!r}, got {names[0]} and {names[1]}")
    return n_classes, geometry, output_stride


class OnnxModel:
    """An exported DeepLab (MSC or single-scale) as a callable on torch tensors, logits on the
    input's device. ``threads``: ONNX Runtime's intra-op threads (None: its default); with
    ``n_classes`` another class count is refused. ``eval()`` and ``to()``: the graph is fixed."""

    def __init__(self, path, device="cpu", threads=None, n_classes=None):
        self.path = path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model not found")
        self.session = _session(path, device, threads)
        # output_stride: the grid predict.py pads inputs to (16 for v3 and v3+, 8 for v2)
        self.n_classes, geometry, self.output_stride = _read_metadata(path, self.session)
        if geometry is not None:  # only an MSC has a geometry (libs.models.geometry.model_geometry)
            self.geometry = geometry
        if n_classes is not None and self.n_classes != n_classes:
            raise CheckpointError(f"{path}: the ONNX model has {self.n_classes} classes, the "
                                 f"config asks for {n_classes} (DATASET.N_CLASSES)")

    def __call__(self, x):
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: image})[0]
        return torch.from_numpy(logits).to(x.device)

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self
