"""Model conversion: Hugging Face safetensors / GGUF -> quantized .ddrt with DecDEC residuals.

    from decdec_rt.convert import convert
    convert("model.gguf", "model-w3.ddrt", bits=3, method="awq", calib_text=open("calib.txt").read())

Modules: source (the common in-memory form), hf and gguf_reader (the readers), quantize (RTN,
AWQ, non-uniform, bit maps, residuals), calibrate (activation statistics), pipeline (convert),
demo (the `decdec-rt demo` command).
"""
from .pipeline import convert
from .source import Source, UnsupportedModelError, load_source

__all__ = ["convert", "load_source", "Source", "UnsupportedModelError"]
