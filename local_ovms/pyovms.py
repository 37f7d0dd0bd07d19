"""A stand-in for OVMS's ``pyovms`` module: the ``Tensor`` a Python node receives and returns.

It is installed as the module ``pyovms`` (see ``handler.resolve_pyovms``) only when a real ``pyovms``
is not importable. ``Tensor`` is an ``numpy.ndarray`` subclass because Python 3.11 offers the buffer
protocol to classes only through a C base type; the attributes the contract names (``name``, ``shape``,
``datatype``, ``data``, ``size``) override the ndarray ones and arithmetic is disabled, so it behaves
like the real tensor: use ``np.array(t)``, ``bytes(t)`` or ``memoryview(t)`` to get at the contents.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMAT_TO_DATATYPE = {
    "?": "BOOL",
    "B": "UINT8",
    "H": "UINT16",
    "I": "UINT32",
    "Q": "UINT64",
    "b": "INT8",
    "h": "INT16",
    "i": "INT32",
    "q": "INT64",
    "e": "FP16",
    "f": "FP32",
    "d": "FP64",
}
# Dtypes made from the format letters export those letters: np.dtype("q") equals int64 but its
# buffers say "q", where int64's say "l" on Linux, which is no KServe datatype.
DATATYPE_TO_DTYPE = {datatype: np.dtype(fmt) for fmt, datatype in FORMAT_TO_DATATYPE.items()}
_NATIVE_ORDER = "@=<" if np.little_endian else "@=>"


def datatype_of_format(fmt: str) -> str:
    """The KServe datatype for a struct format; an unknown format is returned as is."""
    bare = fmt[1:] if fmt[:1] in _NATIVE_ORDER and len(fmt) == 2 else fmt
    return FORMAT_TO_DATATYPE.get(bare, fmt)


class Tensor(np.ndarray):
    """``Tensor(name, data, shape=None, datatype=None)``: a named buffer, as OVMS's ``pyovms.Tensor``.

    ``data`` is any object with the buffer protocol. ``datatype`` defaults to the mapping of the
    buffer's struct format; ``shape`` defaults to the buffer's shape, and overriding it reshapes
    nothing (the buffer keeps its own shape).
    """

    __array_ufunc__ = None

    def __new__(cls, name: str, data: Any, shape: Any = None, datatype: str | None = None) -> Tensor:
        view = memoryview(data)
        try:
            array = np.asarray(view)
        except (TypeError, ValueError, NotImplementedError):
            array = np.frombuffer(view.tobytes(), dtype=np.uint8)
        tensor = array.view(cls)
        tensor._name = str(name)
        tensor._view = view
        tensor._shape = tuple(int(d) for d in shape) if shape is not None else tuple(view.shape)
        tensor._datatype = datatype if datatype is not None else datatype_of_format(view.format)
        return tensor

    def __array_finalize__(self, obj: Any) -> None:
        self._name = getattr(obj, "_name", "")
        self._view = None
        self._shape = None
        self._datatype = None

    @property
    def name(self) -> str:
        """The tensor (stream) name."""
        return self._name

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """The shape given at construction, or the buffer's shape."""
        return self._shape if self._shape is not None else np.ndarray.shape.__get__(self)

    @property
    def datatype(self) -> str:
        """The KServe datatype (``UINT8``, ``FP32``, ``BYTES``...)."""
        return self._datatype if self._datatype is not None else datatype_of_format(memoryview(self).format)

    @property
    def data(self) -> memoryview:  # type: ignore[override]
        """A memoryview of the underlying buffer."""
        return self._view if self._view is not None else memoryview(self)

    @property
    def size(self) -> int:  # type: ignore[override]
        """The buffer size in bytes."""
        return self.nbytes

    def __repr__(self) -> str:
        return f"Tensor(name={self.name!r}, shape={self.shape}, datatype={self.datatype!r}, size={self.size})"

    __str__ = __repr__
