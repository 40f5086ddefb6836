"""Everything about the authors' Caffe weights: the ``.caffemodel`` reader, the name mapping, the converter.

The modules, from the bytes up:

* ``protobuf``: read ``.caffemodel`` files without Caffe;
* ``names``: which module of our model each Caffe layer fills;
* ``converter``: the strict layer-by-layer mapping onto a model's state dict;
* ``presets``: the released files, their default paths and the model each must fit;
* ``pipeline``: file in, checked state dict out (``convert.py`` saves it atomically).

Every failure is a :class:`~libs.utils.errors.DeepLabError` with a one-line
message naming the file (and layer): ``CaffeModelError`` for a file that
cannot be read, ``ConversionError`` for one that does not fit the model,
``OutputError`` for an output that cannot be written.
"""

from ..utils.errors import OutputError
from .converter import ConversionError, ConversionSummary, convert_caffe_layers
from .pipeline import check_loads, convert_caffemodel
from .presets import CAFFE_PRESETS, CaffePreset, preset_paths, target_model
from .protobuf import CaffeModelError, read_caffemodel

__all__ = [
    "CAFFE_PRESETS",
    "CaffeModelError",
    "CaffePreset",
    "ConversionError",
    "ConversionSummary",
    "OutputError",
    "check_loads",
    "convert_caffe_layers",
    "convert_caffemodel",
    "preset_paths",
    "read_caffemodel",
    "target_model",
]
