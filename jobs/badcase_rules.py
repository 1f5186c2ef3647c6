"""Badcase Killer rules: text normalization, grounding and the lexicons they use.

Every rule returns findings `(reason_code, detail)`; a title with no finding passes. The
lexicons (marketing and audience phrases, stopwords, sensitive terms, profanity, place
names to ignore) and the thresholds are data files named in the `badcase` config section,
so changing what counts as a bad case is an edit of `config/`, not of this module.

`fabrication_reasons` is the grounding check on its own; the Creative LLM's training-data
filter uses it too (same lexicons, same verdicts).

Grounding: a content word of a title is grounded when its stem appears in the original
title, a selling point or the query (or is the concatenation of two adjacent source words,
"ear buds" / "earbuds"), or when it is covered by a configured marketing or audience phrase.
Stopwords are ignored. A number is grounded when the same value appears in the source.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Token = (kind, value): kind "w" for a word (letters only), "n" for a number.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_QUOTES = re.compile(r"[’‘`´]")
_POSSESSIVE = re.compile(r"'s\b")


def normalize(text: str) -> str:
    """NFKC, case-folded, quotes unified, possessives and apostrophes dropped."""
    t = unicodedata.normalize("NFKC", text or "").casefold()
    t = _QUOTES.sub("'", t)
    t = _POSSESSIVE.sub("", t)
    return t.replace("'", "")


def number_value(raw: str) -> str:
    """'16,000' -> '16000', '6.0' -> '6', '4.70' -> '4.7' (one spelling per value)."""
    if "," in raw and re.fullmatch(r"\d{1,3}(,\d{3})+", raw):
        raw = raw.replace(",", "")
    raw = raw.replace(",", ".")
    if "." in raw:
        raw = raw.rstrip("0").rstrip(".")
    return raw.lstrip("0") or "0"


def tokens(text: str) -> list[tuple[str, str]]:
    """Words and numbers of a text, in order."""
    out = []
    for m in _TOKEN.finditer(normalize(text)):
        s = m.group(0)
        out.append(("n", number_value(s)) if s[0].isdigit() else ("w", s))
    return out


def stem(word: str) -> str:
    """Light English suffix stripping, applied to both sides of every comparison.

    Not a linguistic stemmer: it only has to map inflections of one word to one key
    ("shoes"/"shoe", "batteries"/"battery", "charging"/"charged"/"charge"), and a rare
    collision only makes the grounding check more lenient.
    """
    w = word
    if len(w) <= 3 or not w.isalpha():
        return w
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"),
                         ("xes", "x"), ("zes", "z")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2:
            w = w[: -len(suffix)] + repl
            break
    else:
        if w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
        w = w[:-1]  # runn -> run, stopp -> stop
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def stems(text: str) -> list[tuple[str, str]]:
    return [(k, stem(v) if k == "w" else v) for k, v in tokens(text)]


def read_lines(path: Path) -> list[str]:
    """One entry per line; blank lines and `#` comments skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("re:") else line.strip()
        if line:
            out.append(line)
    return out


class PhraseIndex:
    """Token-sequence phrases (stemmed), matched greedily longest-first."""

    def __init__(self, phrases: Iterable[str]):
        self.by_first: dict[tuple[str, str], list[tuple[tuple[str, str], ...]]] = {}
        self.phrases: dict[tuple[tuple[str, str], ...], str] = {}
        for p in phrases:
            key = tuple(stems(p))
            if key:
                self.phrases.setdefault(key, p)
                self.by_first.setdefault(key[0], []).append(key)
        for lst in self.by_first.values():
            lst.sort(key=len, reverse=True)

    def matches(self, toks: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
        """(start, end, phrase) for every occurrence, overlaps allowed."""
        out = []
        for i, t in enumerate(toks):
            for key in self.by_first.get(t, ()):
                if tuple(toks[i : i + len(key)]) == key:
                    out.append((i, i + len(key), self.phrases[key]))
        return out

    def covered(self, toks: Sequence[tuple[str, str]]) -> list[bool]:
        cov = [False] * len(toks)
        for i, j, _ in self.matches(toks):
            for k in range(i, j):
                cov[k] = True
        return cov


@dataclass(frozen=True)
class GroundingLexicons:
    """What a title may add to its ad without it counting as fabricated."""

    allowed: PhraseIndex  # marketing + audience phrases
    stopwords: frozenset[str]  # stemmed

    @classmethod
    def load(cls, marketing: Path, audience: Path, stopwords: Path) -> GroundingLexicons:
        phrases = read_lines(marketing) + read_lines(audience)
        stop = frozenset(stem(normalize(w)) for w in read_lines(stopwords)) | frozenset(
            normalize(w) for w in read_lines(stopwords))
        return cls(PhraseIndex(phrases), stop)


@functools.lru_cache(maxsize=1)
def default_grounding() -> GroundingLexicons:
    """The lexicons named by the `badcase` section of the resolved config."""
    from jobs.config import load_config

    bc = load_config().badcase
    return GroundingLexicons.load(bc.marketing_phrases, bc.audience_phrases, bc.stopwords)


def source_keys(original_title: str, selling_points: Iterable[str] | None,
                query: str | None) -> tuple[set[str], set[str]]:
    """(grounded word stems, grounded number values) of an ad's source texts."""
    words: set[str] = set()
    numbers: set[str] = set()
    for text in [original_title or "", *(selling_points or []), query or ""]:
        toks = tokens(text)
        for k, v in toks:
            (words if k == "w" else numbers).add(stem(v) if k == "w" else v)
        for (k1, a), (k2, b) in zip(toks, toks[1:], strict=False):
            if k1 == k2 == "w":  # "ear buds" grounds "earbuds"
                words.add(stem(a + b))
    return words, numbers


def fabrication_findings(title: str, original_title: str, selling_points: Iterable[str] | None,
                         query: str | None,
                         lexicons: GroundingLexicons | None = None) -> list[tuple[str, str]]:
    """Ungrounded content words and numbers of `title`, as (reason, detail) findings."""
    lex = lexicons or default_grounding()
    words, numbers = source_keys(original_title, selling_points, query)
    raw = tokens(title)
    toks = [(k, stem(v) if k == "w" else v) for k, v in raw]
    covered = lex.allowed.covered(toks)
    findings: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, ((kind, key), (_, word)) in enumerate(zip(toks, raw, strict=True)):
        if covered[i]:
            continue
        if kind == "n":
            if key not in numbers:
                f = ("fabricated_number", key)
                if f not in seen:
                    seen.add(f)
                    findings.append(f)
            continue
        if key in lex.stopwords or word in lex.stopwords or key in words:
            continue
        # "earbuds" in the source grounds "ear buds" in the title, either neighbour
        nxt = raw[i + 1] if i + 1 < len(raw) else None
        prv = raw[i - 1] if i > 0 else None
        if (nxt and nxt[0] == "w" and stem(word + nxt[1]) in words) or (
                prv and prv[0] == "w" and stem(prv[1] + word) in words):
            continue
        f = ("fabricated_word", word)
        if f not in seen:
            seen.add(f)
            findings.append(f)
    return findings


def fabrication_reasons(title: str, original_title: str, selling_points: list[str],
                        query: str | None) -> list[str]:
    """Reason codes for content of `title` grounded in none of the ad's texts.

    Empty list = grounded. Codes: `fabricated_word` (a content word that is in none of the
    original title, selling points, query, or the configured marketing/audience phrases)
    and `fabricated_number` (a number absent from them). Uses the default lexicons.
    """
    codes = [code for code, _ in fabrication_findings(title, original_title, selling_points, query)]
    return list(dict.fromkeys(codes))
