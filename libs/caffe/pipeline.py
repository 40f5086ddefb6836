"""From a ``.caffemodel`` on disk to a checked state dict: read, convert, prove it loads.

The converter already checks every layer against the model; the load check
here is the last guard, done the way training and evaluation will load the
file (``strict`` for a full model, only ``base.aspp.*`` may be missing from a
backbone). A failure there is a bug in the mapping, not bad input, and says so.
"""

from .converter import ConversionError, convert_caffe_layers
from .protobuf import read_caffemodel

OPTIONAL_PREFIX = "base.aspp."  # what a backbone-only state dict leaves to the model's init


def convert_caffemodel(caffemodel, model, preset):
    """Read ``caffemodel`` and map it onto ``model`` as ``preset`` says: ``(state_dict, summary)``.

    Raises ``CaffeModelError`` for a file that cannot be read and
    ``ConversionError`` for one that does not fit the model.
    """
    layers = read_caffemodel(caffemodel)
    return convert_caffe_layers(layers, model, preset.classifier, preset.backbone_only,
                                source=caffemodel)


def check_loads(state_dict, model, backbone_only, output):
    """Raise :class:`ConversionError` unless ``state_dict`` loads into ``model`` as it will be used.

    ``output`` (the file it is meant for) starts the message. The model's
    tensors are replaced by the state dict's (``assign=True``, no copy).
    """
    try:
        result = model.load_state_dict(state_dict, strict=not backbone_only, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConversionError(f"{output}: internal error, converted weights do not load "
                              f"({first})") from None
    if backbone_only:
        stray = [k for k in result.missing_keys if not k.startswith(OPTIONAL_PREFIX)]
        if stray or result.unexpected_keys:
            raise ConversionError(
                f"{output}: internal error, backbone state dict does not fit the model "
                f"({(stray + result.unexpected_keys)[0]})"
            )

