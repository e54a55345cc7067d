"""How many tokens CLIP's tokenizer makes of a prompt, without torch.

open_clip's tokenizer module imports torch (and importing it runs open_clip's package,
seconds more), yet counting a prompt's tokens needs only the byte-pair merges CLIP was
trained with. This reads the same merges file open_clip ships
(``bpe_simple_vocab_16e6.txt.gz``, found without importing open_clip) and applies them
the same way: the text cleaned (ftfy, HTML entities, runs of whitespace, lower case),
split into words, numbers and runs of punctuation, each piece's UTF-8 bytes as printable
characters, then merged pair by pair, lowest rank first. tests/test_plan.py checks the
counts against open_clip's own tokenizer.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # the merges CLIP's vocabulary holds: 49,152 tokens less bytes and the two markers
SPECIAL = ("<start_of_text>", "<end_of_text>")
END_OF_WORD = "</w>"


@lru_cache(maxsize=1)
def byte_symbols() -> dict[int, str]:
    """Every byte as one printable character: printable Latin-1 bytes as themselves, the rest
    (controls, space, soft hyphen, ...) moved up past 255 in order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


@lru_cache(maxsize=1)
def merge_ranks() -> dict[tuple[str, str], int]:
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations, "open_clip is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / MERGES_FILE
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1: MERGES + 1]  # line 0: a header
    return {tuple(line.split()): rank for rank, line in enumerate(lines)}


@lru_cache(maxsize=1)
def piece_pattern():
    import regex

    specials = "|".join(SPECIAL)
    return regex.compile(specials + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def clean(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


@lru_cache(maxsize=65536)
def piece_tokens(piece: str) -> int:
    """Tokens of one piece (its bytes as symbols): merge the lowest-ranked adjacent pair until none merges."""
    if piece in SPECIAL:
        return 1
    symbols = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
    ranks = merge_ranks()
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
        best = min(pairs, key=lambda pair: ranks.get(pair, MERGES))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return len(symbols)


def clip_token_count(text: str) -> int:
    """Tokens CLIP's tokenizer makes of ``text`` (the start and end markers not counted)."""
    symbols = byte_symbols()
    return sum(piece_tokens("".join(symbols[b] for b in piece.encode("utf-8")))
               for piece in piece_pattern().findall(clean(text)))
