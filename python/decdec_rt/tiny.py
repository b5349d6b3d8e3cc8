"""A tiny random Llama-style model in .ddrt form, for tests and benchmarks (no downloads).

make_tiny_model(path, ...) builds the tokenizer (trained at build time on the short English
text below), random weights scaled like a real model, quantized linears with DecDEC residuals,
and calibration data (thresholds, static ranking) from the model's own activations, then writes
everything with DdrtWriter. Deterministic for a given seed. tools/make_tiny_model.py is the CLI.
"""
from __future__ import annotations

import io
import json

import numpy as np

# Original English prose for training the tiny tokenizers and for calibration sequences.
CORPUS = """\
The river ran slowly past the old mill, and the children watched the water turn the wheel.
In the morning the baker opened his shop at 6 o'clock and sold 120 loaves before noon.
A small boat carried 3 passengers across the lake; the fare was 4 coins each way.
She wrote a letter to her brother, who lived in a city far to the north, near the mountains.
The library kept its oldest books in a cool room with thick walls and a single window.
Every spring the farmers planted wheat, barley and beans, and hoped for gentle rain in May.
When the bell rang twice, the students closed their notebooks and walked into the garden.
The train left the station at 9:45 and reached the coast three hours later, right on time.
He counted the stars one by one until he lost track somewhere after 200 and fell asleep.
A good map shows roads, rivers, hills and towns, and tells the traveller how far to walk.
The market was busy on Saturday: fish, apples, cheese, bread, honey and warm tea for sale.
Our neighbour repairs clocks; his table is covered with tiny springs, gears and screws.
The teacher asked a simple question: what is 7 times 8? The answer, of course, is 56.
Light travels very fast, yet the light of distant stars is older than the oldest trees.
They built the bridge in 1889, and it still carries carts, bicycles and people every day.
The cat sat on the warm stone step and watched the birds gather seeds from the grass.
In winter the days are short, the nights are long, and the windows glow with yellow lamps.
The museum has a room of old machines: a loom, a printing press and a steam engine.
She planted 15 trees along the path, and after ten years they gave shade to everyone.
Music drifted from an open window, a slow song played on a piano with one missing key.
The recipe needs 2 cups of flour, 1 cup of milk, 3 eggs and a pinch of salt.
A thunderstorm rolled over the valley, and the rain fell so hard that the roads flooded.
The captain checked the weather, the tides and the wind before the ship left the harbour.
People have told stories around fires for thousands of years, long before anyone wrote.
The garden gate creaked open, and a dog with a muddy nose trotted in to say hello.
Numbers such as 3.14, 2.71 and 1.41 appear again and again in mathematics and science.
The old road climbs the hill in long loops, so the horses can pull the heavy wagons.
On the last day of summer the village held a fair with games, music and a long dinner.
A careful reader notices small things: a date, a name, a word that appears only once.
The wind turned the pages of the open book, and nobody in the quiet room said a word.
Water boils at 100 degrees and freezes at 0, at least at the level of the sea.
The young engineer drew a plan for a new pump that would lift water to the high fields.
Rain or shine, the postman walked the same route, and he knew every house by its door.
The forest was dark and green, full of ferns, moss, mushrooms and the songs of birds.
Some questions are easy to ask and hard to answer; others are the other way around.
The clock in the tower struck twelve, and the square filled with people going to lunch.
Her grandmother kept a box of buttons of every colour, and the children loved to sort them.
A lighthouse stands at the end of the pier, and its lamp turns all night long.
The shop sold paper, ink, pens, string and glue, and it smelled of wood and dust.
The path along the cliff is narrow, so walkers go one at a time and hold the rail.
"""


def corpus_lines() -> list[str]:
    return [line for line in CORPUS.splitlines() if line.strip()]


# ---- tokenizers ---------------------------------------------------------------------------------
BOS, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_bpe(vocab_size: int = 400, n_total: int | None = None) -> dict:
    """Byte-level BPE trained on CORPUS. Ids: 0 BOS, 1 <|im_start|>, 2 EOS (<|im_end|>),
    then the 256 byte tokens and the merges. n_total pads the vocabulary with unreachable
    '<extra_N>' tokens (to give a model a larger vocabulary than the trained one).
    Returns the tokenizer.* metadata entries."""
    from tokenizers import Tokenizer as HfTokenizer, decoders, models, pre_tokenizers, trainers
    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS, IM_START, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    if n_total is not None:
        if n_total < len(tokens):
            raise ValueError(f"vocabulary of {n_total} is smaller than the trained {len(tokens)}")
        tokens += [f"<extra_{i}>" for i in range(n_total - len(tokens))]
    return {"tokenizer.model": "bpe", "tokenizer.pre": "gpt2", "tokenizer.tokens": tokens,
            "tokenizer.merges": merges, "tokenizer.bos_id": vocab[BOS], "tokenizer.eos_id": vocab[EOS],
            "tokenizer.pad_id": -1, "tokenizer.add_bos": True,
            "tokenizer.special_tokens": [IM_START, EOS], "tokenizer.chat_template": CHAT_TEMPLATE}


def train_spm(vocab_size: int = 384) -> dict:
    """sentencepiece BPE with byte fallback and single-digit splitting, trained on CORPUS.
    Ids: 0 <unk>, 1 BOS <s>, 2 EOS </s>, 3 <|im_start|>, 4 <|im_end|>, then bytes and pieces."""
    import sentencepiece as spm
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=out, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        user_defined_symbols=[IM_START, "<|im_end|>"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, num_threads=1, minloglevel=2)
    proto = out.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    return {"tokenizer.model": "spm", "tokenizer.spm_proto": proto, "tokenizer.tokens": tokens,
            "tokenizer.bos_id": 1, "tokenizer.eos_id": 2, "tokenizer.pad_id": -1,
            "tokenizer.add_bos": True, "tokenizer.special_tokens": [IM_START, "<|im_end|>"],
            "tokenizer.chat_template": CHAT_TEMPLATE}
