"""Shared fixtures: tiny random models written once per test session (no downloads)."""
import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _make(model_dir, name, **kw):
    from decdec_rt.tiny import make_tiny_model
    path = model_dir / f"{name}.ddrt"
    if not path.exists():
        make_tiny_model(str(path), **kw)
    return str(path)


@pytest.fixture(scope="session")
def tiny3(model_dir):
    """3-bit RTN, byte-level BPE tokenizer, residuals + thresholds + ranking."""
    return _make(model_dir, "tiny3", tokenizer="bpe", bits=3, seed=1)


@pytest.fixture(scope="session")
def tiny4_spm(model_dir):
    """4-bit RTN, sentencepiece tokenizer."""
    return _make(model_dir, "tiny4_spm", tokenizer="spm", bits=4, seed=2)


@pytest.fixture(scope="session")
def tiny16(model_dir):
    """f16 weights with the same seed as tiny3: the FP model tiny3 was quantized from."""
    return _make(model_dir, "tiny16", tokenizer="bpe", bits=16, seed=1)


@pytest.fixture(scope="session")
def tiny3_lut(model_dir):
    """3-bit non-uniform (LUT) weights."""
    return _make(model_dir, "tiny3_lut", tokenizer="bpe", bits=3, method="nonuniform", seed=3)
