#!/usr/bin/env python3
"""Deterministic English evaluation / calibration text for the quality study.

Source: the Debian Reference (Osamu Aoki, GPL-2+), Debian package `debian-reference-en`
(`apt-get install debian-reference-en`), file /usr/share/debian-reference/debian-reference.en.txt.gz.
The text is not shipped with decdec_rt (its licence differs); this script rebuilds the same split
from the installed package.

Prose paragraphs are kept (blank-line separated blocks, re-joined onto one line, of at least 12
words, mostly letters, ending like a sentence; shell sessions, tables and lists are dropped), in
document order. Paragraph i goes to the calibration part when i % 10 == 0, otherwise to the
evaluation part, until each part reaches its character budget. Usage:

    python tools/extract_eval_text.py -o DIR      # writes DIR/calib.txt and DIR/eval.txt
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import sys

SOURCE = "/usr/share/debian-reference/debian-reference.en.txt.gz"
CHANGELOG = "/usr/share/doc/debian-reference-en/changelog.gz"
EVAL_CHARS = 98_000       # about 21,500 SmolLM2 tokens
CALIB_CHARS = 20_000      # about 4,400 tokens
_CODE_START = ("$", "#", "|", "+-", "*", "-", "•", "<", "[")


def source_version() -> str:
    """'debian-reference (2.100)' from the package changelog, or 'unknown'."""
    try:
        with gzip.open(CHANGELOG, "rt", encoding="utf-8") as f:
            m = re.match(r"(\S+) \(([^)]+)\)", f.readline())
        return f"{m.group(1)} ({m.group(2)})" if m else "unknown"
    except OSError:
        return "unknown"


def is_prose(par: str) -> bool:
    words = par.split()
    if len(words) < 12 or par.startswith(_CODE_START) or not par[-1] in ".:)":
        return False
    letters = sum(c.isalpha() or c == " " for c in par)
    return letters >= 0.85 * len(par) and "  " not in par


def paragraphs(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [ln.strip() for ln in block.splitlines()]
        if not lines or any(not ln for ln in lines):
            continue
        par = " ".join(lines)
        if is_prose(par):
            out.append(par)
    return out


def extract(source: str = SOURCE, eval_chars: int = EVAL_CHARS, calib_chars: int = CALIB_CHARS):
    """(calibration text, evaluation text): paragraphs joined by blank lines."""
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source} not found: install the Debian package debian-reference-en "
                                "(apt-get install debian-reference-en)")
    with gzip.open(source, "rt", encoding="utf-8") as f:
        pars = paragraphs(f.read())
    calib, ev = [], []
    for i, par in enumerate(pars):
        part, budget = (calib, calib_chars) if i % 10 == 0 else (ev, eval_chars)
        if sum(len(p) + 2 for p in part) < budget:
            part.append(par)
    return "\n\n".join(calib) + "\n", "\n\n".join(ev) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out-dir", required=True, help="where calib.txt and eval.txt go")
    ap.add_argument("--source", default=SOURCE, help=f"debian-reference text (default {SOURCE})")
    ap.add_argument("--eval-chars", type=int, default=EVAL_CHARS)
    ap.add_argument("--calib-chars", type=int, default=CALIB_CHARS)
    args = ap.parse_args(argv)
    calib, ev = extract(args.source, args.eval_chars, args.calib_chars)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, text in (("calib.txt", calib), ("eval.txt", ev)):
        with open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"{source_version()}: calibration {len(calib)} chars, evaluation {len(ev)} chars "
          f"-> {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
