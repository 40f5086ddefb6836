"""Everything about the authors' Caffe weights, from the bytes up: ``protobuf`` reads
``.caffemodel`` files without Caffe, ``names`` says which module each Caffe layer fills,
``converter`` maps the layers strictly onto a model's state dict, ``presets`` holds the released
files and takes one to a checked state dict (``convert.py`` saves it atomically).

Every failure is one line naming the file (and layer): ``CaffeModelError`` for a file that cannot
be read, ``ConversionError`` for one that does not fit the model, ``OutputError`` for an output
that cannot be written.
"""

from ..utils.errors import OutputError
from .converter import ConversionError, convert_caffe_layers
from .presets import CAFFE_PRESETS, check_loads, convert_caffemodel, preset_paths, target_model
from .protobuf import CaffeModelError, read_caffemodel

__all__ = ["CAFFE_PRESETS", "CaffeModelError", "ConversionError", "OutputError", "check_loads",
           "convert_caffe_layers", "convert_caffemodel", "preset_paths", "read_caffemodel",
           "target_model"]
