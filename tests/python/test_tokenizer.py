"""Tokenizer: sentencepiece and byte-level BPE round trips, special tokens, streaming, errors."""
import json

import pytest

from decdec_rt import tiny
from decdec_rt.tokenizer import StreamDecoder, Tokenizer

TEXTS = [
    "Hello world",
    "The river ran slowly past the old mill.",
    "  leading spaces, trailing space ",
    "line one\nline two\n\ttabbed",
    "digits 0123456789 and 3.14159, 1,000,000",
    "café naïve façade Ærø",
    "東京は日本の首都です。",
    "emoji 🙂🚀 mixed ünïcödé",
    "",
]
CHAT = "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def bpe_meta():
    return tiny.train_bpe()


@pytest.fixture(scope="module")
def spm_meta():
    return tiny.train_spm()


@pytest.fixture(scope="module", params=["bpe", "spm"])
def tok(request, bpe_meta, spm_meta):
    return Tokenizer.from_metadata(bpe_meta if request.param == "bpe" else spm_meta)


@pytest.mark.parametrize("text", TEXTS + [CHAT])
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.n_vocab for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text, add_bos=False)) == text


def test_bos(tok):
    assert tok.add_bos and tok.bos_id >= 0
    assert tok.encode("hi")[0] == tok.bos_id
    assert tok.encode("hi", add_bos=False) == tok.encode("hi")[1:]
    assert tok.encode("", add_bos=False) == []
    assert tok.is_special(tok.bos_id) and tok.is_special(tok.eos_id)


def test_special_tokens_kept_whole(tok):
    start, end = tok.encode("<|im_start|><|im_end|>", add_bos=False)
    assert tok.is_special(start) and tok.is_special(end)
    ids = tok.encode(CHAT, add_bos=False)
    assert ids.count(start) == 2 and ids.count(end) == 1
    assert ids[0] == start
    # a special-looking string that is not one is split like ordinary text
    assert len(tok.encode("<|im_middle|>", add_bos=False)) > 1
    assert not any(tok.is_special(i) for i in tok.encode("<|im_middle|>", add_bos=False))


def test_eos_decodes_to_text_bos_to_nothing(tok):
    assert tok.decode([tok.bos_id]) == ""
    eos_text = tok.decode([tok.eos_id])
    assert eos_text in ("<|im_end|>", "")  # spm's </s> is a control piece: no text


def test_spm_matches_sentencepiece_decode(spm_meta):
    tok = Tokenizer.from_metadata(spm_meta)
    sp = tok._b.sp
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == [tok.bos_id] + sp.encode(text, out_type=int)
        assert tok.decode(ids) == sp.decode(ids)


def test_spm_digits_split(spm_meta):
    tok = Tokenizer.from_metadata(spm_meta)
    ids = tok.encode("12345", add_bos=False)
    assert tok.decode(ids) == "12345"
    assert len([i for i in ids if any(c.isdigit() for c in tok.token_text(i))]) == 5


def test_bpe_hf_json_matches_tokens_and_merges(bpe_meta):
    from tokenizers import Tokenizer as HfTokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(bpe_meta["tokenizer.tokens"])}
    merges = [tuple(m.split(" ")) for m in bpe_meta["tokenizer.merges"]]
    hf = HfTokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    meta = {k: v for k, v in bpe_meta.items() if k not in ("tokenizer.tokens", "tokenizer.merges")}
    meta["tokenizer.hf_json"] = hf.to_str()
    a, b = Tokenizer.from_metadata(bpe_meta), Tokenizer.from_metadata(meta)
    assert a.n_vocab == b.n_vocab
    for text in TEXTS + [CHAT]:
        assert a.encode(text) == b.encode(text)
        assert b.decode(b.encode(text)) == text


@pytest.mark.parametrize("pre", ["gpt2", "smollm", "llama3"])
def test_bpe_pre_tokenizers(bpe_meta, pre):
    tok = Tokenizer.from_metadata({**bpe_meta, "tokenizer.pre": pre})
    for text in TEXTS + [CHAT]:
        assert tok.decode(tok.encode(text)) == text
    digit_ids = tok.encode("12345", add_bos=False)
    if pre == "smollm":
        assert len(digit_ids) == 5  # Digits(individual_digits=True)
    if pre == "llama3":
        assert len(tok.encode("1234567", add_bos=False)) >= 3  # \p{N}{1,3} groups


def test_padded_vocab(bpe_meta):
    meta = tiny.train_bpe(n_total=600)
    tok = Tokenizer.from_metadata(meta)
    assert tok.n_vocab == 600
    assert tok.encode("the river") == Tokenizer.from_metadata(bpe_meta).encode("the river")
    assert tok.decode([599]) == "<extra_199>"


def _stream(tok, ids, **kw):
    d = StreamDecoder(tok, **kw)
    pieces = [d.put(i) for i in ids]
    return pieces, d.flush()


@pytest.mark.parametrize("text", TEXTS + [CHAT])
def test_stream_decoder_concatenates_to_decode(tok, text):
    ids = tok.encode(text)
    pieces, rest = _stream(tok, ids)
    assert "".join(pieces) + rest == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)  # never a broken UTF-8 sequence


def test_stream_decoder_holds_back_partial_utf8(tok):
    text = "東京🙂"
    ids = tok.encode(text, add_bos=False)
    assert any(len(tok.token_bytes(i)) < 3 for i in ids)  # byte-level/byte-fallback pieces
    pieces, rest = _stream(tok, ids)
    assert "" in pieces  # something was held back
    assert [p for p in pieces if p] and all(p in text for p in pieces)
    assert rest == ""


def test_stream_decoder_flush_gives_incomplete_tail(tok):
    ids = tok.encode("é", add_bos=False)
    byte_ids = [i for i in range(tok.n_vocab) if tok.token_bytes(i) == b"\xc3"]
    assert byte_ids, "the byte 0xC3 has a token"
    d = StreamDecoder(tok)
    assert d.put(byte_ids[0]) == ""
    assert d.flush() == "\ufffd"
    assert tok.decode(byte_ids[:1]) == "\ufffd"
    assert tok.decode(ids) == "é"


def test_stream_decoder_continuation_keeps_space(spm_meta):
    tok = Tokenizer.from_metadata(spm_meta)
    text = "The river ran past the mill"
    ids = tok.encode(text, add_bos=False)
    for k in range(1, len(ids)):
        pieces, rest = _stream(tok, ids[k:], continuation=True)
        assert tok.decode(ids[:k]) + "".join(pieces) + rest == text


def test_errors(bpe_meta, spm_meta):
    with pytest.raises(ValueError, match="tokenizer.model"):
        Tokenizer.from_metadata({})
    with pytest.raises(ValueError, match="wordpiece"):
        Tokenizer.from_metadata({"tokenizer.model": "wordpiece"})
    with pytest.raises(ValueError, match="tokenizer.spm_proto"):
        Tokenizer.from_metadata({"tokenizer.model": "spm"})
    with pytest.raises(ValueError, match="tokenizer.spm_proto"):
        Tokenizer.from_metadata({"tokenizer.model": "spm", "tokenizer.spm_proto": b"garbage"})
    with pytest.raises(ValueError, match="tokenizer.merges"):
        Tokenizer.from_metadata({k: v for k, v in bpe_meta.items() if k != "tokenizer.merges"})
    with pytest.raises(ValueError, match=r"tokenizer.merges\[0\]"):
        Tokenizer.from_metadata({**bpe_meta, "tokenizer.merges": ["nosuchtoken x"]})
    with pytest.raises(ValueError, match="tokenizer.pre"):
        Tokenizer.from_metadata({**bpe_meta, "tokenizer.pre": "bert"})
    with pytest.raises(ValueError, match="tokenizer.special_tokens"):
        Tokenizer.from_metadata({**bpe_meta, "tokenizer.special_tokens": ["<|nope|>"]})
    with pytest.raises(ValueError, match="tokenizer.bos_id"):
        Tokenizer.from_metadata({**spm_meta, "tokenizer.bos_id": 10**6})
    with pytest.raises(ValueError, match="tokenizer.hf_json"):
        Tokenizer.from_metadata({**bpe_meta, "tokenizer.hf_json": json.dumps({"x": 1})})
    for meta in (bpe_meta, spm_meta):
        tok = Tokenizer.from_metadata(meta)
        for bad in (tok.n_vocab, -1, 10**9):
            with pytest.raises(ValueError, match=f"token id {bad}"):
                tok.decode([5, bad])
            with pytest.raises(ValueError, match=f"token id {bad}"):
                StreamDecoder(tok).put(bad)
        with pytest.raises(TypeError):
            tok.encode(b"bytes")
