"""What every source reader returns: model metadata in .ddrt keys and FP weights in .ddrt names.

A reader (hf.load_hf, gguf_reader.load_gguf) maps its format onto docs/model_keys.md:
config -> model.*, tokenizer -> tokenizer.*, tensors -> token_embd / blk.{i}.{slot} / ... with
Q and K rows in Hugging Face (rotate-half) order. Weights are float32 numpy arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..reference import Config


class UnsupportedModelError(ValueError):
    """The source is not a Llama-style model this converter understands."""


@dataclass
class Source:
    meta: dict                                    # model.* and tokenizer.* metadata
    weights: dict = field(default_factory=dict)   # name -> f32 array (norms [dim], matrices [d_out, d_in])
    origin: str = ""                              # what it was read from, for messages

    @property
    def config(self) -> Config:
        return Config.from_metadata(self.meta)

    def check(self) -> None:
        """Every tensor the model needs is present with its shape (names the first missing one)."""
        for name, shape in self.config.weight_shapes().items():
            if name not in self.weights:
                raise UnsupportedModelError(f"{self.origin}: tensor '{name}' is missing")
            if tuple(self.weights[name].shape) != shape:
                raise UnsupportedModelError(f"{self.origin}: tensor '{name}' has shape "
                                            f"{tuple(self.weights[name].shape)}, expected {shape}")
            if not np.all(np.isfinite(self.weights[name])):
                raise UnsupportedModelError(f"{self.origin}: tensor '{name}' has NaN or inf values")


def load_source(path: str, progress: bool = False) -> Source:
    """A Hugging Face directory or a .gguf file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        from .hf import load_hf
        src = load_hf(path, progress=progress)
    elif os.path.isfile(path) and path.endswith(".gguf"):
        from .gguf_reader import load_gguf
        src = load_gguf(path, progress=progress)
    elif not os.path.exists(path):
        raise FileNotFoundError(f"model source not found: {path}")
    else:
        raise UnsupportedModelError(f"{path}: expected a Hugging Face model directory "
                                    "(config.json + *.safetensors) or a .gguf file")
    src.check()
    return src
