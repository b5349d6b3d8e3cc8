"""decdec_rt: a C++/CUDA runtime for 3/4-bit Llama-style models with DecDEC dynamic error
compensation.

    import decdec_rt
    rt = decdec_rt.Runtime("model.ddrt", device="cpu")
    print(rt.generate("The capital of France is", max_new_tokens=32))
"""
from . import _core
from .errors import (ContextOverflowError, CudaError, Error, FormatError, InvalidArgumentError,
                     OutOfMemoryError)
from .bench import bench
from .runtime import MODES, Runtime, cuda_available

__version__ = "0.1.0"

__all__ = ["Runtime", "bench", "cuda_available", "MODES", "Error", "FormatError", "InvalidArgumentError",
           "ContextOverflowError", "OutOfMemoryError", "CudaError", "__version__"]
