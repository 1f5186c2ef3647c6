"""Grounded decoding: a title may only use whole words of its sources, and cannot loop.

A per-request token allow-list is not enough on a large BPE vocabulary: subwords of the
allowed words recombine into non-words (`Pentil`, `HHL-3070HDD`). Here every generated
*word* must be a word of the request's texts (the ad's title, selling points, query) or of
the shared lexicons, copied whole: model codes and numbers (`HL-3170CDW`, `1.7L`,
`12-Pack`) are words like any other, so a digit cannot be changed or added.

The decoder walks two tries at once: the request's words (bytes) and the tokenizer's
vocabulary (bytes of each token). At each step the allowed tokens are those that keep the
text a sequence of allowed words joined by separators:

    START         a word's first bytes (with or without a leading space)
    inside word   bytes that continue the word; when the word is complete also a space,
                  a new word, a trailing `,`/`:`, a standalone separator (` -`, ` |` ...)
                  and the end token
    after `,` ` ` a new word

and it forbids loops: a word may not follow itself, no word bigram may appear twice (so no
longer n-gram can either), and a word is used at most as often as one source text uses it
(a lexicon word once, a connector three times). The end token is allowed only after a complete word that
is not a connector (`for`, `with`, `and` ...), so a title ends where the model ends it and
never mid-phrase; a title that reaches the token budget without ending is dropped by the
caller, not cut.

A request may carry a **plan**: the claims (selling points, whole) this audience's title
should say (jobs/stages/point_plan.py). Lexically constrained decoding keeps it: the end
token is allowed only once every claim's content words are in the title, and a clause that
opens after `,` or a standalone separator (` -`, ` |`) while a claim is missing is that
claim, word for word. The model still chooses the form around it (what leads, the framing,
where the clause goes, what else it adds).

The same per-request logic serves transformers `generate` (`GroundedLogitsProcessor`) and
vLLM (`models/grounded_vllm.py`, a v1 logits processor fed through
`SamplingParams.extra_args["grounding"]`). Imports nothing from `jobs/`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

SEPARATORS_TRAILING = {",", ":"}
SEPARATORS_STANDALONE = {"-", "–", "—", "|", "&", "/", "+"}
CONNECTORS = {"for", "and", "with", "of", "the", "a", "an", "to", "in", "on", "by", "or",
              "from", "at", "your", "&", "-", "–", "—", "|", "/", "+"}
_STRIP_LEAD = "\"'“”‘’([{"
_STRIP_TRAIL = "\"'“”‘’)]},.;:!?"
MIN_WORDS = 2
ARTICLES = {"a", "an", "the"}
# lexicon phrases a title may use ("For office workers: …, Free returns"): a chain of them
# ("Explore, Buy Now for athletes, Get Yours today") is filler, not a title
MAX_PHRASES = 2
# separators after which a missing plan claim is written (not `:`, which ends a framing
# such as "For hikers:" whose next clause is the product)
PLAN_OPENERS = {",", "-", "–", "—", "|"}


def _chunks(text: str | None) -> list[str]:
    """A text's words: whitespace-separated chunks without surrounding quotes, brackets and
    sentence punctuation; separators are not words."""
    out = []
    for chunk in (text or "").split():
        w = chunk.lstrip(_STRIP_LEAD).rstrip(_STRIP_TRAIL)
        if w and w not in SEPARATORS_STANDALONE:
            out.append(w)
    return out


def source_words(texts: list[str], numbers: bool = True) -> set[str]:
    """The words a title may use, as written, lower-cased and capitalized. `numbers=False`
    leaves out words with a digit (the shared lexicons may not bring numbers: a number
    must come from the ad itself)."""
    words: set[str] = set()
    for text in texts:
        for w in _chunks(text):
            if numbers or not any(c.isdigit() for c in w):
                words.update({w, w.lower(), w[:1].upper() + w[1:]})
    return words


def _number_chunks(texts: list[str]):
    """(the text's raw chunks, index, the number word lower-cased) for each word with a digit."""
    for text in texts:
        raw = (text or "").split()
        for i, chunk in enumerate(raw):
            w = _bare(chunk)
            if any(c.isdigit() for c in w):
                yield raw, i, w


def _bare(chunk: str) -> str:
    return chunk.lstrip(_STRIP_LEAD).rstrip(_STRIP_TRAIL).lower()


def number_predecessors(texts: list[str]) -> dict[str, set[str | None]]:
    """For each word with a digit, the words before it in the sources (None: it starts a
    text or a clause), so "4.7" comes after "Rated", as the ad says it."""
    prv: dict[str, set[str | None]] = {}
    for raw, i, w in _number_chunks(texts):
        starts = i == 0 or raw[i - 1][-1] in ",;:.!?)" or raw[i - 1] in SEPARATORS_STANDALONE
        before = _bare(raw[i - 1]) if i else None
        prv.setdefault(w, set()).update(({None} if starts else set())
                                        | ({before} if before else set()))
    return prv


def number_successors(texts: list[str]) -> dict[str, set[str | None]]:
    """For each word with a digit, the words that follow it in the sources (None: it ends a
    text or a clause there), so a number is copied with what it measures ("24 hours",
    "4.7 out of 5"), never listed bare."""
    nxt: dict[str, set[str | None]] = {}
    for raw, i, w in _number_chunks(texts):
        ends = i + 1 == len(raw) or raw[i][-1] in ",;:.!?)" or raw[i + 1][0] in "([-–|"
        after = _bare(raw[i + 1]) if i + 1 < len(raw) else None
        nxt.setdefault(w, set()).update(({after} if after else set())
                                        | ({None} if ends else set()))
    return nxt


def word_limits(texts: list[str]) -> dict[str, int]:
    """How often a title may use each word: as often as one source text uses it (at least
    once); a word from the lexicons only, once; connectors up to three times."""
    limits: dict[str, int] = {}
    for text in texts:
        counts: dict[str, int] = {}
        for w in _chunks(text):
            counts[w.lower()] = counts.get(w.lower(), 0) + 1
        for w, n in counts.items():
            limits[w] = max(limits.get(w, 1), n)
    return limits


# --------------------------------------------------------------------------- tries

@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)  # vocab trie: tokens ending here
    word: bool = False  # word trie: a complete word ends here
    below: int = 0  # word trie: complete words in this subtree (this node included)


def _insert(root: _Node, key: bytes) -> _Node:
    node = root
    for b in key:
        node = node.children.setdefault(b, _Node())
    return node


def _byte_decoder() -> dict[str, int]:
    """The GPT-2 byte-level alphabet: each of the 256 bytes has a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TokenTable:
    """The vocabulary as bytes, in two tries: tokens without whitespace (`cont`), and tokens
    that are a space followed by non-whitespace bytes (`space`, keyed without the space)."""

    def __init__(self, tokenizer):
        decoder = _byte_decoder()
        special = set(tokenizer.all_special_ids)
        self.eos_id = tokenizer.eos_token_id
        self.bare_space: list[int] = []
        self.cont, self.space = _Node(), _Node()
        self.trailing: list[int] = []  # "," ":"
        self.standalone: list[int] = []  # " -", " |" ... (with the leading space)
        self.standalone_bare: list[int] = []  # "-", "|" ... (after a space token)
        self.bytes_of: dict[int, bytes] = {}
        for tok, i in tokenizer.get_vocab().items():
            if i in special or any(ch not in decoder for ch in tok):
                continue
            raw = bytes(decoder[ch] for ch in tok)
            self.bytes_of[i] = raw
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None  # part of a multi-byte character: only inside a word
            if raw == b" ":
                self.bare_space.append(i)
                continue
            # a token may serve two roles: "-" separates words and sits inside "12-Pack"
            if text is not None and text in SEPARATORS_TRAILING:
                self.trailing.append(i)
            elif text is not None and text[:1] == " " and text[1:] in SEPARATORS_STANDALONE:
                self.standalone.append(i)
            elif text is not None and text in SEPARATORS_STANDALONE:
                self.standalone_bare.append(i)
            if raw[:1] == b" " and not any(c in b" \t\n\r" for c in raw[1:]):
                _insert(self.space, raw[1:]).ids.append(i)
            elif not any(c in b" \t\n\r" for c in raw):
                _insert(self.cont, raw).ids.append(i)


@functools.lru_cache(maxsize=4)
def token_table(tokenizer_dir: str) -> TokenTable:
    from transformers import AutoTokenizer

    return TokenTable(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))


class WordTrie:
    def __init__(self, words: set[str]):
        self.words = frozenset(words)
        self.walks: dict[tuple[bytes, int], tuple[list, list]] = {}  # see `_walk_cached`
        self.forms: dict[str, list[bytes]] = {}  # lower-cased word -> its spellings here
        for w in words:
            self.forms.setdefault(w.lower(), []).append(w.encode("utf-8"))
        self.root = _Node()
        for w in words:
            key = w.encode("utf-8")
            node = self.root
            node.below += 1
            for b in key:
                node = node.children.setdefault(b, _Node())
                node.below += 1
            node.word = True

    def find(self, prefix: bytes) -> _Node | None:
        node = self.root
        for b in prefix:
            node = node.children.get(b)
            if node is None:
                return None
        return node


def _walk(word: _Node, vocab: _Node, out: list[tuple[int, _Node]], path: bytes,
          paths: list[bytes]) -> None:
    """Every token whose bytes continue the word trie from `word`: (token id, node reached)."""
    for b, w_child in word.children.items():
        v_child = vocab.children.get(b)
        if v_child is None:
            continue
        for i in v_child.ids:
            out.append((i, w_child))
            paths.append(path + bytes([b]))
        if v_child.children:
            _walk(w_child, v_child, out, path + bytes([b]), paths)


# --------------------------------------------------------------------------- per request

def _walk_cached(trie: WordTrie, start: _Node, prefix: bytes, vocab: _Node
                 ) -> tuple[list[tuple[int, _Node]], list[bytes]]:
    """`_walk`, memoized on the trie: a title revisits the same prefixes (every word start
    walks the whole trie), and the lexicon tries are shared by every request of a process."""
    key = (prefix, id(vocab))
    if key not in trie.walks:
        found: list[tuple[int, _Node]] = []
        paths: list[bytes] = []
        _walk(start, vocab, found, b"", paths)
        trie.walks[key] = (found, paths)
    return trie.walks[key]


class Grounding:
    """The allowed next tokens of one request, given what it has generated so far."""

    def __init__(self, table: TokenTable, words: set[str], lexicon: Lexicon | None = None,
                 limits: dict[str, int] | None = None,
                 numbers: dict[str, set[str | None]] | None = None, target_words: int = 0,
                 number_before: dict[str, set[str | None]] | None = None,
                 original: str = "", plan: list[str] | None = None):
        self.table = table
        self.original = _plain(original)  # a title may not end as a copy of it
        self.number_before = number_before or {}
        self.target_words = target_words  # the original title's length, in words
        self.numbers = numbers or {}
        self._number_tries: dict[str, WordTrie] = {}
        self.own = WordTrie(words)
        self.own_lower = frozenset(w.lower() for w in words)
        self.lexicon = lexicon
        self.limits = limits or {}
        self._cache: dict[tuple, tuple[list[int], bool]] = {}
        # the plan's claims: (their words lower-cased, their content words); a claim with a
        # word the sources lack cannot be copied and is left out
        stop = lexicon.stop if lexicon is not None else frozenset()
        self.plan: list[tuple[tuple[str, ...], frozenset[str]]] = []
        for claim in plan or []:
            ws = tuple(w.lower() for w in _chunks(claim))
            if ws and all(w in self.own_lower for w in ws):
                content = frozenset(w for w in ws if w not in CONNECTORS and w not in stop)
                self.plan.append((ws, content or frozenset(ws)))
        self._claim_tries: dict[str, WordTrie] = {}

    def plan_done(self, low: list[str]) -> bool:
        """Every claim of the plan is in the title (its content words, in any order)."""
        have = set(low)
        return all(content <= have for _, content in self.plan)

    def forced(self, low: list[str], clause: int, opener: str | None) -> WordTrie | None:
        """The next word when the clause being written must be a missing plan claim (its
        `clause` words so far are the start of that claim, and it opened after one of
        `PLAN_OPENERS`), as a trie of its spellings; None when the model chooses."""
        if not self.plan or opener not in PLAN_OPENERS:
            return None
        have = set(low)
        so_far = tuple(low[len(low) - clause:]) if clause else ()
        for ws, content in self.plan:
            if not content <= have and ws[:len(so_far)] == so_far and len(ws) > len(so_far):
                w = ws[len(so_far)]
                if w not in self._claim_tries:
                    self._claim_tries[w] = WordTrie(
                        {o for o in self.own.words if o.lower() == w})
                return self._claim_tries[w]
        return None

    def tries_after(self, low: list[str], joined: bool = True,
                    starts: frozenset[int] = frozenset()) -> tuple[list[WordTrie], bool]:
        """The tries the next word comes from, and whether the title may end here: while a
        lexicon word waits for the rest of its phrase, only that phrase's next word.
        `joined`: no separator between the last word and the next; `starts`: the indices of
        the words of `low` that open a clause."""
        last = low[-1] if low else None
        if joined and last in self.numbers:  # a number goes on as in its source
            after = self.numbers[last]
            words = {w for w in after if w is not None}
            if last not in self._number_tries:
                self._number_tries[last] = WordTrie(
                    {v for w in words for v in (w, w[:1].upper() + w[1:])}
                    | {o for o in self.own.words if o.lower() in words})
            return [self._number_tries[last]], None in after
        if self.lexicon is None:
            return [self.own], True
        cont, owed, used = self.lexicon.state(low, self.own_lower, starts)
        if owed:
            return [self.lexicon.trie_of(cont)], False
        extra = [self.lexicon.trie_of(cont)] if cont else []
        stop = self.lexicon.stop
        if used >= MAX_PHRASES:  # no further phrase: the ad's words and glue only
            if last in stop and last not in self.own_lower:
                return [self.own] + extra, last not in ARTICLES
            return [self.own, self.lexicon.stop_trie] + extra, True
        if last in ARTICLES and last not in self.own_lower:
            return [self.own] + extra, False  # an article goes on to what it names: "a in" no
        if len(low) >= 2 and all(w in stop and w not in self.own_lower for w in low[-2:]):
            return [self.own] + extra, True  # no third filler word in a row
        if last in stop:
            # after a filler (the ad's own "on", "of" too): the ad's words, a phrase, or an
            # article ("for the"); a second bare filler would owe a phrase it cannot start
            # (`Lexicon.state`): a dead end, or a chain ("on Each of Either on Even")
            return [self.own, self.lexicon.starts_trie, self.lexicon.articles] + extra, True
        return [self.own, self.lexicon.free] + extra, True

    def _no_filler(self, tries: list[WordTrie]) -> list[WordTrie]:
        """A clause starts with an own word or a lexicon phrase, never a bare stopword."""
        if self.lexicon is None:
            return tries
        return [self.lexicon.starts_trie if tr is self.lexicon.free else tr for tr in tries]

    def _misplaced_numbers(self, prev: str | None, joined: bool) -> set[str]:
        """Numbers that may not start here: each comes after the word the ad puts before it,
        or at the start of a clause where the ad starts a clause with it."""
        return {n for n, before in self.number_before.items()
                if not ((joined and prev in before) or (not joined and None in before))}

    def words_so_far(self, generated: list[int]) -> int:
        raw = b"".join(self.table.bytes_of.get(i, b"") for i in generated)
        return len(raw.split())

    def _may_close(self, word: str) -> bool:
        """A segment (before `,` `:` ` -` or the end) may close on a content word or a
        number, never on a stopword ("Him, Hers,") or a connector."""
        stop = self.lexicon.stop if self.lexicon is not None else frozenset()
        return word not in CONNECTORS and word not in stop

    def _used_up(self, low: list[str]) -> set[str]:
        """Words used as often as they may be (a loop would repeat them)."""
        used: dict[str, int] = {}
        for w in low:
            used[w] = used.get(w, 0) + 1
        return {w for w, n in used.items()
                if n >= (3 if w in CONNECTORS else self.limits.get(w, 1))}

    def _tokens_from(self, tries: list[WordTrie], prefix: bytes, vocab: _Node,
                     banned: set[str]) -> set[int]:
        """Tokens that continue `prefix` inside some allowed word that is not banned."""
        ids: set[int] = set()
        for trie in tries:
            start = trie.find(prefix)
            if start is None:
                continue
            found, paths = _walk_cached(trie, start, prefix, vocab)
            if not banned:
                ids.update(i for i, _ in found)
                continue
            blocked = self._blocked_counts(trie, banned)
            for (i, node), path in zip(found, paths, strict=True):
                if node.below > blocked.get(prefix + path, 0):
                    ids.add(i)
        return ids

    @staticmethod
    def _blocked_counts(trie: WordTrie, banned: set[str]) -> dict[bytes, int]:
        """Per prefix, how many spellings of the banned (lower-cased) words pass through it."""
        counts: dict[bytes, int] = {}
        for lw in banned:
            for w in trie.forms.get(lw, ()):
                for k in range(1, len(w) + 1):
                    counts[w[:k]] = counts.get(w[:k], 0) + 1
        return counts

    @staticmethod
    def _is_word(tries: list[WordTrie], frag: bytes) -> bool:
        return any((n := t.find(frag)) is not None and n.word for t in tries)

    def allowed(self, generated: list[int]) -> list[int]:
        """Token ids allowed after the generated token ids (the end token excluded)."""
        return self._allowed(generated)[0]

    def ends_cleanly(self, generated: list[int]) -> bool:
        """Whether the end token was a real choice after `generated` (the title's tokens
        without the end token), not the dead-end fallback: a title that ran out of grounded
        ways on ends on whatever it had ("… for the"), and is dropped by the caller."""
        ids, dead = self._allowed(generated)
        return not dead and self.table.eos_id in ids

    def _allowed(self, generated: list[int]) -> tuple[list[int], bool]:
        """(allowed token ids, whether this is a dead end where only the end token is left)."""
        t = self.table
        raw = b"".join(t.bytes_of.get(i, b"") for i in generated if i != t.eos_id)
        words, frag, after_sep, starts, opener, clause = _parse(raw)
        if after_sep and not raw.endswith(b" "):
            last = raw.rsplit(b" ", 1)[-1]
            if last[-1:] in (b",", b":") and any(
                    tr.find(last) is not None for tr in [self.own, *self._number_tries.values()]):
                # "16," of "16,000": the clause goes on
                words, frag, after_sep = words[:-1], last, False
                opener, clause = _parse(raw[: len(raw) - len(last)])[4:]
        low = [_lower(w) for w in words]
        starts = frozenset(i for i in starts if i < len(low))
        prev = low[-1] if low else None
        pairs = set(zip(low, low[1:], strict=False))
        banned_next = ({b for a, b in pairs if a == prev} | ({prev} if prev else set())
                       | self._used_up(low))
        key = (frag, after_sep, raw.endswith(b" "), not raw, tuple(low), starts, opener, clause)
        if key in self._cache:
            return self._cache[key]
        ban = set(banned_next)
        head = raw[: len(raw) - len(frag)].rstrip(b" ") if frag else raw.rstrip(b" ")
        tail = head.rsplit(b" ", 1)[-1].decode("utf-8", errors="replace")
        # the word being written (or next) follows the last word with no separator between
        joined = not (after_sep or (tail and (tail[-1] in SEPARATORS_TRAILING
                                              or tail in SEPARATORS_STANDALONE)))
        claim = self.forced(low, clause, opener)
        if claim is not None:  # a plan claim, copied whole: no bans, no end, no separator
            tries, may_end, ban = [claim], False, set()
        else:
            tries, may_end = self.tries_after(low, joined, starts)
            ban = ban | self._misplaced_numbers(prev, joined and bool(raw.strip()))
        ids: set[int] = set()
        if not raw:  # START: an own word or a lexicon phrase's first word, never a filler
            if self.lexicon is not None:
                tries = [self.own, self.lexicon.starts_trie]
            ids |= self._tokens_from(tries, b"", t.cont, ban)
            ids |= self._tokens_from(tries, b"", t.space, ban) | set(t.bare_space)
        elif raw.endswith(b" "):  # after a space: the next word's first bytes
            ids |= self._tokens_from(tries if joined else self._no_filler(tries), b"", t.cont,
                                     ban)
            before = raw.rstrip(b" ").rsplit(b" ", 1)[-1].decode("utf-8", errors="replace")
            if may_end and before and before[-1] not in SEPARATORS_TRAILING \
                    and before not in SEPARATORS_STANDALONE and self._may_close(_lower(
                        before.encode("utf-8"))):
                ids |= set(t.standalone_bare)  # "Pen" " " "-"
        elif after_sep:  # after `,` `:` or ` -`: a space, or a space-led word (no filler)
            ids |= self._tokens_from(self._no_filler(tries), b"", t.space, ban)
            ids -= set(t.standalone)  # no second separator ("& &")
            ids |= set(t.bare_space)
        else:  # inside a word; one that opens a clause is no bare filler, as at its start
            ids |= self._tokens_from(tries if joined and low else self._no_filler(tries), frag,
                                     t.cont, ban)
            word = _lower(frag)
            if self._is_word(tries, frag) and (claim or word not in banned_next):
                # the word may end here: then the bans apply to what follows it
                here = low + [word]
                claim_here = self.forced(here, clause + 1, opener)
                if claim_here is not None:  # the claim goes on
                    tries_here, may_end_here, ban_here = [claim_here], False, set()
                else:
                    pairs_here = pairs | ({(prev, word)} if prev else set())
                    ban_here = ({b for a, b in pairs_here if a == word} | {word}
                                | self._used_up(here))
                    tries_here, may_end_here = self.tries_after(
                        here, True, starts | ({len(low)} if not joined else set()))
                    ban_here |= self._misplaced_numbers(word, True)
                ids |= self._tokens_from(tries_here, b"", t.space, ban_here)
                ids |= set(t.bare_space)
                if may_end_here and self._may_close(word):  # outside an open phrase
                    ids |= set(t.trailing) | set(t.standalone)
                    if len(words) + 1 >= MIN_WORDS and self.plan_done(here) and _plain(
                            raw.decode("utf-8", errors="replace")) != self.original:
                        ids.add(t.eos_id)
        dead = not ids
        if dead:  # every way on repeats: end here; `ends_cleanly` tells the caller
            ids = {t.eos_id}
        out = (sorted(ids), dead)
        self._cache[key] = out
        return out


def _lower(w: bytes) -> str:
    return w.decode("utf-8", errors="replace").lower()


def _plain(text: str) -> str:
    """Lower-cased words without punctuation: how a copy of the original is recognized."""
    return " ".join(w for w in (c.strip(_STRIP_LEAD + _STRIP_TRAIL + "-–|&/")
                                for c in text.lower().split()) if w)


def _parse(raw: bytes) -> tuple[list[bytes], bytes, bool, set[int], str | None, int]:
    """(complete words, the fragment being written, whether the text ends in a separator
    or in a space after one, the indices of the words that open a clause: the first word
    and each after a separator, the separator that opened the clause being written (None:
    the title's start), how many complete words that clause has). Separators are not words."""
    chunks = raw.lstrip(b" ").split(b" ")
    words: list[bytes] = []
    starts, opens = set(), True
    pending: str | None = None  # the separator the next clause opens after
    opener, clause_at = None, 0
    for c in chunks[:-1]:
        w = c.rstrip(b",:")
        if w and w.decode("utf-8", errors="replace") not in SEPARATORS_STANDALONE:
            if opens:
                starts.add(len(words))
                opener, clause_at = pending, len(words)
            words.append(w)
            opens = w != c  # "Pen," closes a clause
            if opens:
                pending = c[-1:].decode()
        elif c:
            opens, pending = True, c.decode("utf-8", errors="replace")  # " - ", " | "
    last = chunks[-1]
    text_last = last.decode("utf-8", errors="replace")
    after_sep = bool(last) and (text_last[-1] in SEPARATORS_TRAILING
                                or text_last in SEPARATORS_STANDALONE)
    if after_sep:
        w = last.rstrip(b",:")
        if w and w.decode("utf-8", errors="replace") not in SEPARATORS_STANDALONE:
            if opens:
                starts.add(len(words))
            words.append(w)
            pending = text_last[-1]
        else:
            pending = text_last
        last, opens = b"", True
    if opens:  # a new clause, no word of it yet
        return words, last, after_sep, starts, pending, 0
    return words, last, after_sep, starts, opener, len(words) - clause_at


class Lexicon:
    """What a title may add beyond its ad's words, as the Badcase Killer judges it: stopwords
    anywhere, lexicon phrases only whole ("for trail runners", never "trail" alone)."""

    def __init__(self, phrases: tuple[str, ...], stopwords: tuple[str, ...]):
        self.phrases = [tuple(w.lower() for w in _chunks(p)) for p in phrases]
        self.phrases = [p for p in self.phrases if p]
        self.starts: dict[str, list[int]] = {}
        for k, p in enumerate(self.phrases):
            self.starts.setdefault(p[0], []).append(k)
        # single letters ("s", "t" of contractions) are no words of a title, but "a"
        self.stop = frozenset(w.lower() for w in stopwords if len(w) > 1 or w.lower() == "a")
        self.free = WordTrie(source_words(sorted(self.stop | {p[0] for p in self.phrases}),
                                          numbers=False))
        self.starts_trie = WordTrie(source_words(sorted({p[0] for p in self.phrases}),
                                                 numbers=False))
        self.articles = WordTrie(source_words(sorted(ARTICLES & self.stop), numbers=False))
        self.stop_trie = WordTrie(source_words(sorted(self.stop), numbers=False))
        self._tries: dict[frozenset, WordTrie] = {}

    def trie_of(self, words: frozenset) -> WordTrie:
        if words not in self._tries:
            self._tries[words] = WordTrie(source_words(sorted(words), numbers=False))
        return self._tries[words]

    def state(self, words: list[str], own: frozenset,
              starts: frozenset[int] = frozenset()) -> tuple[frozenset, bool, int]:
        """(words that may come next to continue an open phrase, whether a lexicon word
        still waits for its phrase to complete, how many phrases the title has used) after
        the lower-cased `words`; `starts`: the indices of the words that open a clause.

        A stopword of the lexicons (not of the ad) is free only as glue right after one of the
        ad's content words ("Gel Pen for"); one that opens a clause or follows another
        stopword must start a whole phrase ("For office workers", never "A in" or "Him and
        A Hers"). An article inside a clause is judged by what follows it
        (`Grounding.tries_after`); one that opens a clause must start a phrase too."""
        active: set[tuple[int, int, int]] = set()  # (phrase, words matched, start index)
        owed = None  # index of the earliest lexicon word not yet inside a complete phrase
        done = 0  # phrases completed
        for i, w in enumerate(words):
            nxt = {(k, n + 1, s) for k, n, s in active if self.phrases[k][n] == w}
            nxt |= {(k, 1, i) for k in self.starts.get(w, [])}
            glue = (i > 0 and i not in starts and words[i - 1] in own
                    and words[i - 1] not in self.stop)  # after one of the ad's content words
            if owed is None and w not in own and (
                    w not in self.stop or not (glue or (w in ARTICLES and i not in starts))):
                owed = i
            if owed is not None and any(n == len(self.phrases[k]) and s <= owed
                                        for k, n, s in nxt):
                owed = None  # a complete phrase covers every word it spans
                done += 1
            active = {(k, n, s) for k, n, s in nxt if n < len(self.phrases[k])}
        if owed is None:  # free, and any open phrase may go on
            return frozenset(self.phrases[k][n] for k, n, _ in active), False, done
        return frozenset(self.phrases[k][n] for k, n, s in active if s <= owed), True, done


@functools.lru_cache(maxsize=64)  # one per set of framings that fit an ad
def lexicon(phrases: tuple[str, ...], stopwords: tuple[str, ...] = ()) -> Lexicon:
    return Lexicon(phrases, stopwords)


def grounding_for(table: TokenTable, texts: list[str], phrases: tuple[str, ...],
                  stopwords: tuple[str, ...] = (), plan: list[str] | None = None,
                  phrases_off: tuple[str, ...] = ()) -> Grounding:
    """The request's decoder: its own texts' words (numbers included) and the lexicons'
    stopwords and whole phrases (no numbers; `phrases_off`, lower-cased, left out), each
    word used at most as often as a source uses it; `plan`: the claims the title must carry."""
    if phrases_off:
        off = set(phrases_off)
        phrases = tuple(p for p in phrases if p.lower() not in off)
    return Grounding(table, source_words(texts), lexicon(phrases, stopwords),
                     word_limits(texts), number_successors(texts),
                     target_words=len(_chunks(texts[0])) if texts else 0,
                     number_before=number_predecessors(texts),
                     original=texts[0] if texts else "", plan=plan)


EOS_BONUS_PER_WORD = 1.0  # logit added to the end token per word past the target length


def mask_logits(logits: torch.Tensor, allowed: list[int], grounding: Grounding | None = None,
                generated: list[int] | None = None) -> torch.Tensor:
    """logits (V,): everything but `allowed` to -inf (in place). With `grounding`, the end
    token (where allowed) gains EOS_BONUS_PER_WORD per word beyond the original title's
    length plus `EXTRA_WORDS`: a length prior, so a title that has said what it has to say
    ends instead of rambling into the token budget (it still ends only where it may)."""
    keep = logits[allowed].clone()
    logits.fill_(float("-inf"))
    logits[allowed] = keep
    if grounding is not None and generated is not None:
        eos = grounding.table.eos_id
        extra = grounding.words_so_far(generated) - grounding.target_words - EXTRA_WORDS
        if extra > 0 and torch.isfinite(logits[eos]):
            logits[eos] += EOS_BONUS_PER_WORD * extra
    return logits


EXTRA_WORDS = 4  # words a title may add to its original before the length prior starts


# --------------------------------------------------------------------------- engines

class GroundedLogitsProcessor:
    """transformers `LogitsProcessor` for a batch: row b follows `groundings[b]`. With
    `inputs_embeds`, `input_ids` holds only the generated tokens."""

    def __init__(self, groundings: list[Grounding]):
        self.groundings = groundings

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for b, g in enumerate(self.groundings):
            ids = input_ids[b].tolist()
            if ids and ids[-1] == g.table.eos_id:
                continue  # a finished row: generate pads it itself
            mask_logits(scores[b], g.allowed(ids), g, ids)
        return scores
