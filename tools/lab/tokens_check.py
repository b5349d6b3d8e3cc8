"""The logits of 8 one-token steps of a synthetic model on the GPU (after a 24-token prompt),
hashed bit for bit and printed as one line, so that two processes with different DDRT_* switches
can be compared: the block-local merge, its extension and DDRT_TC_ONE must give the default's bits.
Usage: python3 tools/lab/tokens_check.py SHAPE BITS"""
import hashlib
import sys

import numpy as np

from decdec_rt import _core

shape, bits = sys.argv[1], int(sys.argv[2])
eng = _core.Engine.synthetic(shape, bits=bits, group=128, with_residual=False, seed=0, n_layers=0,
                             device="cuda", max_seq_len=256, residual="host", max_batch=64, graphs=True,
                             kv_cache="f16")
ids = np.random.default_rng(0).integers(0, eng.config["n_vocab"], 32).astype(np.int32)
eng.forward(ids[:24], False)
h = hashlib.sha1()
for t in ids[24:32]:  # one token at a time: the decode kernels, logits hashed bit for bit
    h.update(np.asarray(eng.forward(np.array([t], np.int32), False), np.float32).tobytes())
lg = np.asarray(eng.forward(np.array([ids[0]], np.int32), False), np.float32).ravel()
print(shape, bits, "logits", h.hexdigest()[:12], lg[:3], "argmax", int(lg.argmax()))
