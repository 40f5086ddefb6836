"""What the model is made of (draw_model.py): a layer-by-layer summary and a TensorBoard graph."""

import warnings
from collections import Counter

import torch

from .resnet import ConvBnReLU, FrozenBatchNorm2d


def layer_summary(model, image_size):
    """``(rows, output shape)``, a row ``(name, type, output shape, parameters, calls)`` per layer
    from one eval-mode forward; the shape is the first call's (MSC's full-scale pass)."""
    shapes, calls = {}, Counter()

    def hook(name):
        def record(module, inputs, output):
            calls[name] += 1
            shapes.setdefault(name, tuple(output.shape) if torch.is_tensor(output) else None)
        return record

    layers, inside_unit = [], ()  # each conv-BN-ReLU unit (one Caffe layer), every other leaf
    for name, module in model.named_modules():
        if inside_unit and name.startswith(inside_unit):
            continue
        if isinstance(module, ConvBnReLU):
            layers.append((name, module))
            inside_unit = name + "."
        elif not any(True for _ in module.children()):
            layers.append((name, module))
    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        with torch.inference_mode():
            output = model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    rows = [(name, type(module).__name__, shapes.get(name),
             sum(p.numel() for p in module.parameters()), calls[name]) for name, module in layers]
    return rows, tuple(output.shape)


def format_shape(shape):
    """``(1, 8, 17, 17)`` -> ``"1x8x17x17"``; no shape (a layer never called) -> ``"-"``."""
    return "-" if shape is None else "x".join(str(s) for s in shape)


def format_summary(rows, output_shape, model, image_size):
    """The rows of :func:`layer_summary` as an aligned table, with the model's totals."""
    name_width, type_width = (max(len(r[i]) for r in rows) for i in (0, 1))
    row = f"{{:<{name_width}}}  {{:<{type_width}}}  {{:>16}}  {{:>11}}  {{:>5}}"
    lines = [f"Layers at input 1x3x{image_size}x{image_size} (output shapes of the full-scale "
             "pass; 'calls' > 1: also run on the extra MSC scales)",
             row.format("layer", "type", "output shape", "parameters", "calls")]
    lines += [row.format(name, kind, format_shape(shape), f"{n_params:,}", calls)
              for name, kind, shape, n_params, calls in rows]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"model output (fused logits): {format_shape(output_shape)}")
    frozen = sum(p.numel() for m in model.modules() if isinstance(m, FrozenBatchNorm2d)
                 for p in m.parameters(recurse=False))
    lines.append(f"{len(rows)} layers, {total:,} parameters ({trainable:,} trainable; "
                 f"{frozen:,} in frozen BatchNorm)")
    return "\n".join(lines)


def write_graph(model, image_size, log_dir):
    """Trace the eval-mode model; write its graph (and nothing else) to an event file in log_dir.

    (``SummaryWriter.add_graph`` would add an empty run-metadata record, "step1".)
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard._pytorch_graph import graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # one input size: intended
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace; nothing to act on
        graph_def, _ = graph(model.eval(), torch.zeros(1, 3, image_size, image_size))
    with SummaryWriter(str(log_dir)) as writer:
        writer._get_file_writer().add_event(Event(graph_def=graph_def.SerializeToString()))
