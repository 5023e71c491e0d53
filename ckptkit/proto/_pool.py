"""The private descriptor pool every ckptkit.proto module registers into.

Our messages have TensorFlow's full names (``tensorflow.BundleEntryProto``, ...)
so they are wire compatible with TF's; TF registers its own copies in protobuf's
default pool, so ours must live elsewhere to coexist in one process.
"""
from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()

# Well-known types our .proto files import (meta_graph: Any; trackable_object_graph: BoolValue).
for _wkt in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_wkt.DESCRIPTOR.serialized_pb)
del _wkt
