"""Exceptions raised by decdec_rt. Every one is a subclass of :class:`Error`; each also derives
from the built-in class a Python user would catch for that problem (ValueError, MemoryError, ...).
The native core raises these same classes (see python/src/bindings.cpp)."""


class Error(Exception):
    """Base class of every decdec_rt error."""


class FormatError(Error, ValueError):
    """The model file is malformed; the message names the field and byte offset."""


class InvalidArgumentError(Error, ValueError):
    """An argument is invalid (shape, mode, token id, option)."""


class ContextOverflowError(Error, ValueError):
    """More tokens than the context window holds."""


class OutOfMemoryError(Error, MemoryError):
    """A host or device allocation failed."""


class CudaError(Error, RuntimeError):
    """The CUDA backend is unavailable or a CUDA call failed."""
