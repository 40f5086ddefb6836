"""Everything about the authors' Caffe weights: the ``.caffemodel`` reader, the name mapping, the converter."""
