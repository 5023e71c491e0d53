"""TensorFlow DataType numbers <-> numpy dtypes, with TF's dtype names.

`get_variable_to_dtype_map()` must hand back objects whose `.name` is the name TF
prints ("float32", "bfloat16", "string"), so code written against TF keeps working.
bfloat16 and the float8/int4 types come from ml_dtypes, the package TF itself uses. It is
imported only when one of those numpy dtypes is first asked for: ml_dtypes 0.7 takes half a
second to import, and listing a checkpoint needs only dtype names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

from .errors import UnsupportedError

if TYPE_CHECKING:  # the generated enum type; at run time its values are plain ints
    import numpy as np
    from numpy.typing import DTypeLike

    from .proto.types_pb2 import DataType

__all__ = ["DType", "as_dtype", "check_numpy_shape", "from_enum", "numpy_max_dims", "STRING"]


class DType:
    """A TF dtype: its DataType enum number, TF's name and the numpy dtype it reads into."""

    __slots__ = ("enum", "name", "numpy")
    numpy: np.dtype  # set on first use (see __getattr__); a plain slot read after that

    def __init__(self, enum: int, name: str) -> None:
        self.enum = cast("DataType", enum)
        self.name = name

    def __getattr__(self, attr: str) -> np.dtype:
        # Only reached while the `numpy` slot is still unset.
        if attr != "numpy":
            raise AttributeError(attr)
        import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

        if self.name in _ML_DTYPES:
            import ml_dtypes  # noqa: PLC0415 - slow to import, and only these types need it

            npd = np.dtype(getattr(ml_dtypes, self.name))
        else:
            npd = np.dtype(object if self.enum == _DT_STRING else self.name)
        self.numpy = npd
        return npd

    @property
    def as_datatype_enum(self) -> int:
        return self.enum

    @property
    def as_numpy_dtype(self) -> type:
        return self.numpy.type

    @property
    def is_string(self) -> bool:
        return self.enum == _DT_STRING

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def category(self) -> str:
        """"float", "complex", "int", "bool" or "string": what arithmetic means for the
        values (bfloat16 and float8 are floats, int4 an int, though numpy calls them 'V')."""
        name = self.name
        if name.startswith(("float", "bfloat")):
            return "float"
        if name.startswith("complex"):
            return "complex"
        return name if name in ("bool", "string") else "int"

    def __repr__(self) -> str:
        return f"tf.{self.name}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return self.enum == other.enum
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.enum)


# DataType enum -> TF name, which is also the numpy (or ml_dtypes) name of the dtype values
# read into; strings read into object arrays. Numbers: tensorflow/core/framework/types.proto.
_DT_STRING = 7
_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", _DT_STRING: "string",
    8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
    19: "float16", 22: "uint32", 23: "uint64", 24: "float8_e5m2", 25: "float8_e4m3fn",
    26: "float8_e4m3fnuz", 27: "float8_e4m3b11fnuz", 28: "float8_e5m2fnuz", 29: "int4", 30: "uint4",
}
_ML_DTYPES = frozenset(("bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
                        "float8_e5m2fnuz", "int4", "uint4"))

_BY_ENUM = {enum: DType(enum, name) for enum, name in _NAMES.items()}
_BY_NAME = {d.name: d for d in _BY_ENUM.values()}
_ALIASES = {"float": _BY_NAME["float32"], "double": _BY_NAME["float64"], "half": _BY_NAME["float16"]}
# TF name -> the TensorProto field holding values of that dtype (tensor.proto): int_val for
# the small integer types, half_val for float16/bfloat16 bit patterns, (re, im) pairs in
# scomplex_val/dcomplex_val.
TENSOR_PROTO_FIELD = {
    "float32": "float_val", "float64": "double_val", "int32": "int_val", "uint8": "int_val",
    "int16": "int_val", "int8": "int_val", "string": "string_val", "complex64": "scomplex_val",
    "int64": "int64_val", "bool": "bool_val", "bfloat16": "half_val", "uint16": "int_val",
    "complex128": "dcomplex_val", "float16": "half_val", "uint32": "uint32_val", "uint64": "uint64_val",
    "float8_e5m2": "float8_val", "float8_e4m3fn": "float8_val", "float8_e4m3fnuz": "float8_val",
    "float8_e4m3b11fnuz": "float8_val", "float8_e5m2fnuz": "float8_val", "int4": "int_val", "uint4": "int_val",
}
_REF_OFFSET = 100  # DT_FLOAT_REF = 101 etc.: a variable's ref type in old graphs
STRING = _BY_ENUM[_DT_STRING]


def from_enum(enum: int, *, path: str | None = None, key: str | None = None) -> DType:
    """The DType for a DataType number read from a file (ref types map to their base)."""
    if enum > _REF_OFFSET:
        enum -= _REF_OFFSET
    try:
        return _BY_ENUM[enum]
    except KeyError:
        raise UnsupportedError(f"unsupported TensorFlow DataType {enum}", path=path, key=key) from None


def known_enum(enum: int) -> bool:
    """Whether `from_enum(enum)` gives a DType (ckptkit can decode that DataType)."""
    return (enum - _REF_OFFSET if enum > _REF_OFFSET else enum) in _BY_ENUM


def enum_name(enum: int) -> str:
    """TF's DataType name for a number ("DT_FLOAT"), as TF's debug strings print it."""
    from .proto import types_pb2  # noqa: PLC0415 - only debug strings need names

    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return str(enum)


def as_dtype(value: object) -> DType:
    """A DType from a DType, TF name ("float32"), DataType number, numpy dtype or TF dtype."""
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    if isinstance(value, DType):
        return value
    if isinstance(value, str) and (value in _BY_NAME or value in _ALIASES):
        return _BY_NAME.get(value) or _ALIASES[value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return from_enum(int(value))
    enum = getattr(value, "as_datatype_enum", None)  # a tf.DType, without importing tf
    if isinstance(enum, int):
        return from_enum(enum)
    try:
        npd = np.dtype(cast("DTypeLike", value))  # anything else numpy takes for a dtype
    except TypeError:
        raise UnsupportedError(f"cannot interpret {value!r} as a dtype") from None
    if npd.kind in "OSU":
        return STRING
    # numpy's dtype names are TF's; the comparison keeps out look-alikes (a structured
    # dtype, or a name clash) without importing ml_dtypes for plain numpy dtypes.
    dtype = _BY_NAME.get(npd.name)
    if dtype is None or dtype.numpy != npd.newbyteorder("="):
        raise UnsupportedError(f"numpy dtype {npd} has no TensorFlow equivalent")
    return dtype


# --------------------------------------------------------------------------- what numpy can hold

_numpy_max_dims: int | None = None
_NUMPY_MAX_BYTES = (1 << 63) - 1  # numpy's npy_intp: an array's byte size must fit it


def numpy_max_dims() -> int:
    """The most dimensions a numpy array may have here (64 in numpy 2, 32 before)."""
    global _numpy_max_dims
    if _numpy_max_dims is None:
        import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

        _numpy_max_dims = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
    return _numpy_max_dims


def check_numpy_shape(shape: tuple[int, ...], dtype: DType | None, path: str | None = None,
                      key: str | None = None) -> None:
    """A shape a checkpoint may hold but numpy cannot build is UnsupportedError, before
    numpy sees it (numpy's own ValueError would name neither file nor key). Only an
    empty tensor gets here in practice: data that fits in a file fits in numpy, but TF
    accepts `[0, 2**62]` of float32, whose non-zero dims overflow numpy's byte count."""
    if len(shape) > numpy_max_dims():
        raise UnsupportedError(f"tensor has {len(shape)} dimensions; numpy arrays have at most "
                               f"{numpy_max_dims()}", path=path, key=key)
    nbytes = 1 if dtype is None else dtype.numpy.itemsize  # object (strings): a pointer each
    for d in shape:
        if d:
            nbytes *= d
            if nbytes > _NUMPY_MAX_BYTES:
                raise UnsupportedError(f"tensor shape {list(shape)} is too large for a numpy array",
                                       path=path, key=key)
