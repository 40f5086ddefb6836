"""Read Caffe's binary ``.caffemodel`` files without Caffe or ``protoc``.

Instead of a generated ``caffe_pb2.py`` (which needs ``protoc`` and pins a protobuf version), the
few ``caffe.NetParameter`` messages and fields conversion needs are declared here with the numbers,
types and defaults of Caffe's public ``caffe.proto`` (the DeepLab v2 fork uses the same numbers).
Undeclared fields are kept by the parser as unknown bytes and ignored, so a real file reads fine;
the test fixtures add the fields only they need (``tests/caffe_reference.py``).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ..utils.atomic import read_input
from ..utils.errors import CheckpointError

# Enum values of caffe.proto that the converter compares against. Enum fields
# are declared as int32 (same varint encoding) so unknown values never vanish.
POOL_MAX = 0  # PoolingParameter.PoolMethod.MAX
ROUND_CEIL = 0  # PoolingParameter.RoundMode.CEIL (BVLC field 13; older forks lack it)

_PACKAGE = "deeplab_caffe_subset"


def field(name, number, kind, default=None, repeated=False, packed=False):
    """One field as ``caffe.proto`` declares it: ``kind`` is a scalar type ("uint32") or a message
    name ("BlobShape"); ``packed`` fields are repeated; ``default`` is proto text ("true")."""
    f = descriptor_pb2.FieldDescriptorProto(name=name, number=number)
    f.label = f.LABEL_REPEATED if repeated or packed else f.LABEL_OPTIONAL
    if kind[0].isupper():
        f.type, f.type_name = f.TYPE_MESSAGE, f".{_PACKAGE}.{kind}"
    else:
        f.type = getattr(f, f"TYPE_{kind.upper()}")
    if default is not None:
        f.default_value = default
    if packed:
        f.options.packed = True
    return f


# message name -> fields; numbers, types and defaults are those of caffe.proto.
SCHEMA = {
    "BlobShape": [field("dim", 1, "int64", packed=True)],
    "BlobProto": [
        field("shape", 7, "BlobShape"), field("data", 5, "float", packed=True),
        field("double_data", 8, "double", packed=True),
        # 4-D dimensions of files written before BlobShape existed.
        field("num", 1, "int32", "0"), field("channels", 2, "int32", "0"),
        field("height", 3, "int32", "0"), field("width", 4, "int32", "0"),
    ],
    "ConvolutionParameter": [
        field("num_output", 1, "uint32"), field("bias_term", 2, "bool", "true"),
        field("pad", 3, "uint32", repeated=True), field("kernel_size", 4, "uint32", repeated=True),
        field("group", 5, "uint32", "1"), field("stride", 6, "uint32", repeated=True),
        field("pad_h", 9, "uint32", "0"), field("pad_w", 10, "uint32", "0"),
        field("kernel_h", 11, "uint32"), field("kernel_w", 12, "uint32"),
        field("stride_h", 13, "uint32"), field("stride_w", 14, "uint32"),
        field("axis", 16, "int32", "1"), field("dilation", 18, "uint32", repeated=True),
    ],
    "BatchNormParameter": [field("eps", 3, "float", "1e-05")],
    "PoolingParameter": [
        field("pool", 1, "int32", "0"), field("kernel_size", 2, "uint32"),
        field("stride", 3, "uint32", "1"), field("pad", 4, "uint32", "0"),
        field("kernel_h", 5, "uint32"), field("kernel_w", 6, "uint32"),
        field("stride_h", 7, "uint32"), field("stride_w", 8, "uint32"),
        field("pad_h", 9, "uint32", "0"), field("pad_w", 10, "uint32", "0"),
        field("global_pooling", 12, "bool", "false"), field("round_mode", 13, "int32", "0"),
    ],
    "ScaleParameter": [field("axis", 1, "int32", "1"), field("num_axes", 2, "int32", "1"),
                       field("bias_term", 4, "bool", "false")],
    "LayerParameter": [
        field("name", 1, "string"), field("type", 2, "string"),
        field("blobs", 7, "BlobProto", repeated=True),
        field("convolution_param", 106, "ConvolutionParameter"),
        field("pooling_param", 121, "PoolingParameter"),
        field("batch_norm_param", 139, "BatchNormParameter"),
        field("scale_param", 142, "ScaleParameter"),
    ],
    # The pre-2015 layer format; only declared so that such files are recognised.
    "V1LayerParameter": [field("name", 4, "string"), field("type", 5, "int32"),
                         field("blobs", 6, "BlobProto", repeated=True)],
    "NetParameter": [field("name", 1, "string"),
                     field("layers", 2, "V1LayerParameter", repeated=True),
                     field("layer", 100, "LayerParameter", repeated=True)],
}


def build_classes(schema):
    """Message classes for ``schema`` (see :data:`SCHEMA`), in a private pool (no clash with a
    real caffe_pb2)."""
    proto = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE,
                                               syntax="proto2")
    for name, fields in schema.items():
        proto.message_type.add(name=name).field.extend(fields)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in schema}


NetParameter = build_classes(SCHEMA)["NetParameter"]


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
        """Blob ``index``'s shape: ``shape.dim`` if present, else the legacy num/channels/..."""
        blob = self.proto.blobs[index]
        if blob.HasField("shape"):
            return tuple(int(d) for d in blob.shape.dim)
        legacy = (blob.num, blob.channels, blob.height, blob.width)
        return tuple(int(d) for d in legacy) if any(legacy) else ()

    def blob(self, index):
        """Blob ``index`` as a float32 array of its Caffe shape, checked for its number of values
        and finiteness: protobuf has no checksum, so this is how corrupt bytes can show up."""
        blob, shape = self.proto.blobs[index], self.blob_shape(index)
        where = f"{self.source}: layer {self.name!r} blob {index}"
        values = np.array(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
        expected = int(np.prod(shape, dtype=np.int64)) if shape else values.size
        if values.size != expected:
            raise CheckpointError(f"{where}: holds {values.size} values but its shape "
                                  f"{list(shape)} needs {expected} (truncated or corrupt file)")
        if not np.isfinite(values).all():
            raise CheckpointError(f"{where}: contains NaN or infinite values (corrupt file?)")
        return values.reshape(shape if shape else (values.size,))


def _text(value):
    """proto2 strings are not validated on parse; damaged ones come back as bytes."""
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def read_caffemodel(path):
    """The layers of ``path`` as :class:`CaffeLayer` objects, in file order; a
    :class:`CheckpointError` for a missing, unreadable, truncated or corrupt file, one without
    layers, or the legacy V1 ``layers`` format (which the DeepLab v2 ResNet models never used)."""
    path = Path(path)
    if not path.is_file():  # a folder too: "not found", not read_input's "found a directory"
        raise CheckpointError(f"{path}: caffemodel not found")
    raw = read_input(path, "caffemodel", CheckpointError, binary=True)
    net = NetParameter()
    try:
        net.ParseFromString(raw)
    except DecodeError:
        raise CheckpointError(f"{path}: not a valid caffemodel, its protobuf data "
                              f"({len(raw):,} bytes) is truncated or corrupt") from None
    if len(net.layers):
        first = net.layers[0].name or "<unnamed>"
        raise CheckpointError(
            f"{path}: uses the legacy V1 'layers' format ({len(net.layers)} layers, first "
            f"{first!r}), which is not supported; upgrade it with Caffe's "
            "upgrade_net_proto_binary tool first")
    if not len(net.layer):
        raise CheckpointError(f"{path}: contains no layers (empty or not a caffemodel)")
    for index, layer in enumerate(net.layer):
        if not layer.name:
            raise CheckpointError(f"{path}: layer #{index} has no name (corrupt file?)")
    return [CaffeLayer(_text(layer.name), _text(layer.type), layer, str(path))
            for layer in net.layer]
