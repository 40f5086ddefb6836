"""Everything about the authors' Caffe weights: ``protobuf`` reads ``.caffemodel`` files without
Caffe, ``names`` maps Caffe layers to our modules, ``converter`` fills a state dict strictly,
``presets`` holds the released files and takes one to a checked state dict. Every failure is one
line naming the file (and layer): ``CheckpointError`` (unreadable), ``ConversionError`` (does not
fit the model) or ``OutputError`` (cannot be written).
"""

from .converter import convert_caffe_layers
from .presets import CAFFE_PRESETS, check_loads, convert_caffemodel, preset_paths, target_model
from .protobuf import read_caffemodel
