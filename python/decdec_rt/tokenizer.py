"""Tokenizers of a .ddrt model, built from its metadata (docs/model_keys.md, `tokenizer.*` keys).

Two backends:
  spm  sentencepiece, from the serialized ModelProto in `tokenizer.spm_proto`;
  bpe  byte-level BPE through the `tokenizers` library, from `tokenizer.hf_json` when present,
       else from `tokenizer.tokens` + `tokenizer.merges` with the pre-tokenizer named by
       `tokenizer.pre` ("gpt2" default, "smollm", "llama3").

Both are driven the same way: special tokens (`tokenizer.special_tokens` + the BOS/EOS tokens)
are cut out of the text first and kept whole; the pieces between them go to the backend.
Decoding works on bytes: every id maps to the bytes it stands for (`token_bytes`), the bytes of
a sequence are joined and read as UTF-8 (invalid sequences become U+FFFD), so a streamed decode
(StreamDecoder) concatenates to exactly `decode(ids)`. BOS and PAD decode to no text (and so do
sentencepiece control pieces such as </s>, as in sentencepiece itself); the other special tokens,
EOS included, decode to their own text.
"""
from __future__ import annotations

import codecs
import re
from typing import Iterable, Mapping

SPM_SPACE = "\u2581"  # sentencepiece's visible space "▁"

# Llama 3's pre-tokenizer split pattern (the published tokenizer.json value).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's char -> byte map: printable Latin-1 bytes stand for themselves, the
    other 68 bytes (controls, space, ...) are shifted to code points 256, 257, ... in order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
                 + list(range(ord("\xae"), ord("\xff") + 1)))
    table = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shift)] = b
            shift += 1
    return table


_BYTE_OF_CHAR = byte_level_alphabet()


def _as_bytes(v) -> bytes:
    """A u8-array metadata value (bytes, list of ints or numpy array) as bytes."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        raise ValueError("tokenizer.spm_proto must be a u8 array, not a string")
    return bytes(bytearray(int(x) & 0xFF for x in v))


def _required(meta: Mapping, key: str):
    if key not in meta:
        raise ValueError(f"tokenizer metadata: missing field '{key}' "
                         f"(needed for tokenizer.model = {meta.get('tokenizer.model')!r})")
    return meta[key]


class _SpmBackend:
    """sentencepiece. Text pieces that do not start the text are encoded without the dummy
    prefix space (llama.cpp / HF non-legacy behaviour) so that specials round-trip exactly."""

    def __init__(self, meta: Mapping):
        import sentencepiece
        proto = _as_bytes(_required(meta, "tokenizer.spm_proto"))
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto
            raise ValueError(f"tokenizer.spm_proto: not a valid sentencepiece model ({e})") from e
        self.n_vocab = self.sp.get_piece_size()
        probe = self.sp.encode("a", out_type=str)
        self.dummy_prefix = bool(probe) and probe[0].startswith(SPM_SPACE)
        # pieces the marker string encodes to: stripped from "marker + text" encodings
        self._marker = "\u2047"
        self._marker_len = len(self.sp.encode(self._marker, out_type=int))

    def encode(self, text: str, at_start: bool) -> list[int]:
        if at_start or not self.dummy_prefix:
            return self.sp.encode(text, out_type=int)
        return self.sp.encode(self._marker + text, out_type=int)[self._marker_len:]

    def token_id(self, piece: str):
        i = self.sp.piece_to_id(piece)
        return i if self.sp.id_to_piece(i) == piece else None

    def token_text(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def token_bytes(self, i: int) -> bytes:
        if self.sp.is_control(i):
            return b""
        if self.sp.is_unknown(i):
            return " \u2047 ".encode()  # sentencepiece's rendering of <unk>
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i):  # "<0xAB>"
            return bytes([int(piece[3:5], 16)])
        return piece.replace(SPM_SPACE, " ").encode()

    def special_bytes(self, i: int) -> bytes:
        return b"" if self.sp.is_control(i) else self.sp.id_to_piece(i).encode()

    def strips_leading_space(self, i: int) -> bool:
        """Whether the first text piece of a decode loses its leading (dummy prefix) space."""
        return self.dummy_prefix and not (self.sp.is_control(i) or self.sp.is_byte(i)
                                          or self.sp.is_unknown(i))


def _bpe_pre_tokenizer(name: str):
    from tokenizers import Regex, pre_tokenizers as pt
    if name == "gpt2":
        return pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True),
                            pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    if name == "llama3":
        return pt.Sequence([pt.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                            pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError(f"tokenizer.pre: unknown pre-tokenizer {name!r} (gpt2, smollm, llama3)")


class _BpeBackend:
    """Byte-level BPE through the `tokenizers` library."""

    def __init__(self, meta: Mapping):
        from tokenizers import Tokenizer as HfTokenizer, decoders, models
        self.tokens = list(meta["tokenizer.tokens"]) if "tokenizer.tokens" in meta else None
        if meta.get("tokenizer.hf_json"):
            try:
                self.tok = HfTokenizer.from_str(meta["tokenizer.hf_json"])
            except Exception as e:
                raise ValueError(f"tokenizer.hf_json: not a valid tokenizer.json ({e})") from e
        else:
            tokens = _required(meta, "tokenizer.tokens")
            merges = _required(meta, "tokenizer.merges")
            vocab = {t: i for i, t in enumerate(tokens)}
            pairs = []
            for r, m in enumerate(merges):
                a, sep, b = m.partition(" ")
                if not sep or a not in vocab or b not in vocab or a + b not in vocab:
                    raise ValueError(f"tokenizer.merges[{r}] = {m!r}: not 'a b' over the vocabulary")
                pairs.append((a, b))
            self.tok = HfTokenizer(models.BPE(vocab=vocab, merges=pairs))
            self.tok.pre_tokenizer = _bpe_pre_tokenizer(meta.get("tokenizer.pre", "gpt2") or "gpt2")
            self.tok.decoder = decoders.ByteLevel()
        self.n_vocab = len(self.tokens) if self.tokens is not None else \
            self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, at_start: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def token_id(self, text: str):
        if self.tokens is not None:
            try:
                return self.tokens.index(text)
            except ValueError:
                return None
        return self.tok.token_to_id(text)

    def token_text(self, i: int) -> str:
        if self.tokens is not None:
            return self.tokens[i]
        t = self.tok.id_to_token(i)
        return "" if t is None else t

    def token_bytes(self, i: int) -> bytes:
        t = self.token_text(i)
        if all(c in _BYTE_OF_CHAR for c in t):
            return bytes(_BYTE_OF_CHAR[c] for c in t)
        return t.encode()  # not byte-level (e.g. an added token with non-alphabet chars)

    def special_bytes(self, i: int) -> bytes:
        return self.token_text(i).encode()

    def strips_leading_space(self, i: int) -> bool:
        return False


_BACKENDS = {"spm": _SpmBackend, "bpe": _BpeBackend}


class Tokenizer:
    """Text <-> token ids for one model. Build with Tokenizer.from_metadata(meta)."""

    def __init__(self, backend, bos_id: int, eos_id: int, pad_id: int, add_bos: bool,
                 special_tokens: Iterable[str] = (), chat_template: str | None = None):
        self._b = backend
        self._bos, self._eos, self._pad = int(bos_id), int(eos_id), int(pad_id)
        self.add_bos = bool(add_bos)
        self.chat_template = chat_template
        for name, v in (("bos_id", self._bos), ("eos_id", self._eos), ("pad_id", self._pad)):
            if v < -1 or v >= backend.n_vocab:
                raise ValueError(f"tokenizer.{name} = {v} outside [0, {backend.n_vocab}) (or -1)")
        self._control = {i for i in (self._bos, self._eos, self._pad) if i >= 0}
        self._special: dict[str, int] = {}  # text -> id, matched whole in input text
        for t in special_tokens:
            i = backend.token_id(t)
            if i is None:
                raise ValueError(f"tokenizer.special_tokens: {t!r} is not in the vocabulary")
            self._special[t] = i
        for i in self._control:
            t = backend.token_text(i)
            if t:
                self._special.setdefault(t, i)
        self._special_ids = set(self._special.values()) | self._control
        alts = sorted(self._special, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(map(re.escape, alts)) + ")") if alts else None

    @classmethod
    def from_metadata(cls, meta: Mapping) -> "Tokenizer":
        model = meta.get("tokenizer.model")
        if model is None:
            raise ValueError("tokenizer metadata: missing field 'tokenizer.model'")
        if model not in _BACKENDS:
            raise ValueError(f"tokenizer.model: unknown tokenizer {model!r} (expected 'spm' or 'bpe')")
        backend = _BACKENDS[model](meta)
        return cls(backend,
                   bos_id=meta.get("tokenizer.bos_id", -1), eos_id=meta.get("tokenizer.eos_id", -1),
                   pad_id=meta.get("tokenizer.pad_id", -1),
                   add_bos=meta.get("tokenizer.add_bos", False),
                   special_tokens=list(meta.get("tokenizer.special_tokens", []) or []),
                   chat_template=meta.get("tokenizer.chat_template"))

    # ---- properties ----
    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        return self._pad

    @property
    def n_vocab(self) -> int:
        return self._b.n_vocab

    def is_special(self, i: int) -> bool:
        return int(i) in self._special_ids

    def token_text(self, i: int) -> str:
        """The vocabulary entry of id i, as stored (e.g. 'Ġthe', '▁the', '<0x0A>')."""
        return self._b.token_text(self._check_id(i))

    # ---- encode / decode ----
    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        add_bos = self.add_bos if add_bos is None else add_bos
        ids = [self._bos] if add_bos and self._bos >= 0 else []
        parts = self._split_re.split(text) if self._split_re else [text]
        for n, part in enumerate(parts):
            if n % 2 == 1:  # a special token (the capture group of the split)
                ids.append(self._special[part])
            elif part:
                ids.extend(self._b.encode(part, at_start=(n == 0)))
        return ids

    def _check_id(self, i) -> int:
        i = int(i)
        if not 0 <= i < self._b.n_vocab:
            raise ValueError(f"token id {i} outside the vocabulary [0, {self._b.n_vocab})")
        return i

    def token_bytes(self, i: int) -> bytes:
        """The bytes token i stands for (no leading-space stripping). BOS and PAD: b''."""
        i = self._check_id(i)
        if i == self._bos or i == self._pad:
            return b""
        if i in self._special_ids:
            return self._b.special_bytes(i)
        return self._b.token_bytes(i)

    def decode(self, ids: Iterable[int]) -> str:
        d = StreamDecoder(self)
        return "".join(d.put(i) for i in ids) + d.flush()


class StreamDecoder:
    """Incremental decode: put(id) returns the text that id completes. Bytes of an unfinished
    UTF-8 sequence are held back until it completes; flush() returns what is left.
    "".join(put(i) for i in ids) + flush() == tok.decode(ids).

    continuation=True: the ids continue earlier text (e.g. generated after a prompt), so the
    sentencepiece dummy-prefix space of the first piece is kept, not stripped."""

    def __init__(self, tok: Tokenizer, continuation: bool = False):
        self.tok = tok
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = not continuation

    def put(self, i: int) -> str:
        b = self.tok.token_bytes(i)
        if self._at_start and b:
            if i not in self.tok._special_ids and self.tok._b.strips_leading_space(int(i)) \
                    and b.startswith(b" "):
                b = b[1:]
            self._at_start = False
        return self._utf8.decode(b)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
