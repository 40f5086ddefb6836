"""Read Caffe's binary ``.caffemodel`` files without Caffe or ``protoc``.

A ``.caffemodel`` is a serialised ``caffe.NetParameter`` protocol buffer. Instead of a generated
``caffe_pb2.py`` (which needs ``protoc`` and pins a protobuf version), the few messages and fields
conversion needs are declared here with the numbers, types and defaults of Caffe's public
``caffe.proto`` (the DeepLab v2 fork uses the same numbers) and built into classes at import.
Undeclared fields (data and loss layers, learning-rate settings, ...) are kept by the parser as
unknown bytes and ignored, so a real file reads fine. The test fixtures write files with these
classes plus the fields only they need (``tests/caffe_reference.py``).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ..utils.errors import DeepLabError

_F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
INT32, INT64, UINT32 = _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32
FLOAT, DOUBLE, BOOL = _F.TYPE_FLOAT, _F.TYPE_DOUBLE, _F.TYPE_BOOL
STRING, MESSAGE = _F.TYPE_STRING, _F.TYPE_MESSAGE

# Enum values of caffe.proto that the converter compares against. Enum fields
# are declared as int32 (same varint encoding) so unknown values never vanish.
POOL_MAX = 0  # PoolingParameter.PoolMethod.MAX
ROUND_CEIL = 0  # PoolingParameter.RoundMode.CEIL (BVLC field 13; older forks lack it)

_PACKAGE = "deeplab_caffe_subset"

# message name -> [(field name, number, type, label, message type, default, packed)]
SCHEMA = {
    "BlobShape": [
        ("dim", 1, INT64, REPEATED, None, None, True),
    ],
    "BlobProto": [
        ("shape", 7, MESSAGE, OPTIONAL, "BlobShape", None, None),
        ("data", 5, FLOAT, REPEATED, None, None, True),
        ("double_data", 8, DOUBLE, REPEATED, None, None, True),
        # 4-D dimensions of files written before BlobShape existed.
        ("num", 1, INT32, OPTIONAL, None, "0", None),
        ("channels", 2, INT32, OPTIONAL, None, "0", None),
        ("height", 3, INT32, OPTIONAL, None, "0", None),
        ("width", 4, INT32, OPTIONAL, None, "0", None),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, UINT32, OPTIONAL, None, None, None),
        ("bias_term", 2, BOOL, OPTIONAL, None, "true", None),
        ("pad", 3, UINT32, REPEATED, None, None, None),
        ("kernel_size", 4, UINT32, REPEATED, None, None, None),
        ("group", 5, UINT32, OPTIONAL, None, "1", None),
        ("stride", 6, UINT32, REPEATED, None, None, None),
        ("pad_h", 9, UINT32, OPTIONAL, None, "0", None),
        ("pad_w", 10, UINT32, OPTIONAL, None, "0", None),
        ("kernel_h", 11, UINT32, OPTIONAL, None, None, None),
        ("kernel_w", 12, UINT32, OPTIONAL, None, None, None),
        ("stride_h", 13, UINT32, OPTIONAL, None, None, None),
        ("stride_w", 14, UINT32, OPTIONAL, None, None, None),
        ("axis", 16, INT32, OPTIONAL, None, "1", None),
        ("dilation", 18, UINT32, REPEATED, None, None, None),
    ],
    "BatchNormParameter": [
        ("eps", 3, FLOAT, OPTIONAL, None, "1e-05", None),
    ],
    "PoolingParameter": [
        ("pool", 1, INT32, OPTIONAL, None, "0", None),
        ("kernel_size", 2, UINT32, OPTIONAL, None, None, None),
        ("stride", 3, UINT32, OPTIONAL, None, "1", None),
        ("pad", 4, UINT32, OPTIONAL, None, "0", None),
        ("kernel_h", 5, UINT32, OPTIONAL, None, None, None),
        ("kernel_w", 6, UINT32, OPTIONAL, None, None, None),
        ("stride_h", 7, UINT32, OPTIONAL, None, None, None),
        ("stride_w", 8, UINT32, OPTIONAL, None, None, None),
        ("pad_h", 9, UINT32, OPTIONAL, None, "0", None),
        ("pad_w", 10, UINT32, OPTIONAL, None, "0", None),
        ("global_pooling", 12, BOOL, OPTIONAL, None, "false", None),
        ("round_mode", 13, INT32, OPTIONAL, None, "0", None),
    ],
    "ScaleParameter": [
        ("axis", 1, INT32, OPTIONAL, None, "1", None),
        ("num_axes", 2, INT32, OPTIONAL, None, "1", None),
        ("bias_term", 4, BOOL, OPTIONAL, None, "false", None),
    ],
    "LayerParameter": [
        ("name", 1, STRING, OPTIONAL, None, None, None),
        ("type", 2, STRING, OPTIONAL, None, None, None),
        ("blobs", 7, MESSAGE, REPEATED, "BlobProto", None, None),
        ("convolution_param", 106, MESSAGE, OPTIONAL, "ConvolutionParameter", None, None),
        ("pooling_param", 121, MESSAGE, OPTIONAL, "PoolingParameter", None, None),
        ("batch_norm_param", 139, MESSAGE, OPTIONAL, "BatchNormParameter", None, None),
        ("scale_param", 142, MESSAGE, OPTIONAL, "ScaleParameter", None, None),
    ],
    # The pre-2015 layer format; only declared so that such files are recognised.
    "V1LayerParameter": [
        ("name", 4, STRING, OPTIONAL, None, None, None),
        ("type", 5, INT32, OPTIONAL, None, None, None),
        ("blobs", 6, MESSAGE, REPEATED, "BlobProto", None, None),
    ],
    "NetParameter": [
        ("name", 1, STRING, OPTIONAL, None, None, None),
        ("layers", 2, MESSAGE, REPEATED, "V1LayerParameter", None, None),
        ("layer", 100, MESSAGE, REPEATED, "LayerParameter", None, None),
    ],
}


def build_classes(schema):
    """Message classes for ``schema`` (see :data:`SCHEMA`), in a private pool (no clash with a
    real caffe_pb2)."""
    proto = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE,
                                               syntax="proto2")
    for message_name, fields in schema.items():
        message = proto.message_type.add(name=message_name)
        for name, number, ftype, label, type_name, default, packed in fields:
            f = message.field.add(name=name, number=number, type=ftype, label=label)
            if type_name is not None:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if default is not None:
                f.default_value = default
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in schema}


NetParameter = build_classes(SCHEMA)["NetParameter"]


class CaffeModelError(DeepLabError, ValueError):
    """A .caffemodel that cannot be read; the message names the file (and layer)."""


@dataclass
class CaffeLayer:
    """One layer of a .caffemodel. Blobs stay protobuf messages until :meth:`blob` turns one into
    an array, so skipped layers (e.g. the multi-scale copies) never cost a conversion."""

    name: str
    type: str
    proto: object  # the LayerParameter message, for the *_param fields
    source: str  # file name, for error messages

    @property
    def n_blobs(self):
        return len(self.proto.blobs)

    def blob_shape(self, index):
        """Blob ``index``'s shape: ``shape.dim`` if present, else the legacy num/channels/height/
        width."""
        blob = self.proto.blobs[index]
        if blob.HasField("shape"):
            return tuple(int(d) for d in blob.shape.dim)
        legacy = (blob.num, blob.channels, blob.height, blob.width)
        return tuple(int(d) for d in legacy) if any(legacy) else ()

    def blob(self, index):
        """Blob ``index`` as a float32 array of its Caffe shape.

        Checks that the number of values matches the shape and that all are finite: protobuf has
        no checksum, so this is how a corrupt shape or damaged float bytes can show up.
        """
        blob, shape = self.proto.blobs[index], self.blob_shape(index)
        where = f"{self.source}: layer {self.name!r} blob {index}"
        values = np.array(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
        expected = int(np.prod(shape, dtype=np.int64)) if shape else values.size
        if values.size != expected:
            raise CaffeModelError(f"{where}: holds {values.size} values but its shape "
                                  f"{list(shape)} needs {expected} (truncated or corrupt file)")
        if not np.isfinite(values).all():
            raise CaffeModelError(f"{where}: contains NaN or infinite values (corrupt file?)")
        return values.reshape(shape if shape else (values.size,))


def _text(value):
    """proto2 strings are not validated on parse; damaged ones come back as bytes."""
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def read_caffemodel(path):
    """Parse ``path`` and return its layers as :class:`CaffeLayer` objects, in file order.

    Raises :class:`CaffeModelError` (naming the file) for a missing, unreadable, truncated or
    corrupt file, for a file without layers and for the legacy V1 ``layers`` format, which the
    DeepLab v2 ResNet models never used.
    """
    path = Path(path)
    if not path.is_file():
        raise CaffeModelError(f"{path}: caffemodel not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CaffeModelError(f"{path}: cannot read caffemodel ({e.strerror})") from None
    net = NetParameter()
    try:
        net.ParseFromString(raw)
    except DecodeError:
        raise CaffeModelError(f"{path}: not a valid caffemodel, its protobuf data "
                              f"({len(raw):,} bytes) is truncated or corrupt") from None
    if len(net.layers):
        first = net.layers[0].name or "<unnamed>"
        raise CaffeModelError(
            f"{path}: uses the legacy V1 'layers' format ({len(net.layers)} layers, first "
            f"{first!r}), which is not supported; upgrade it with Caffe's "
            "upgrade_net_proto_binary tool first")
    if not len(net.layer):
        raise CaffeModelError(f"{path}: contains no layers (empty or not a caffemodel)")
    for index, layer in enumerate(net.layer):
        if not layer.name:
            raise CaffeModelError(f"{path}: layer #{index} has no name (corrupt file?)")
    return [CaffeLayer(_text(layer.name), _text(layer.type), layer, str(path))
            for layer in net.layer]
