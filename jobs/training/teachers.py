"""Teachers for the Creative LLM's training data (HLLM-Creator §3.2), behind one interface.

The chain of thought has three steps; a teacher does the first two:
1. `profiles`: a user's click history -> an interest profile (long-term and short-term
   interests, purchasing preferences, needs, a one-paragraph description);
2. `titles`: profile + history + optional query + original title + selling points ->
   the user information worth using, the selling points this user cares about, then a
   title that adds a bounded number of characters to the original;
3. the hallucination filter (jobs/training/build_dataset.py) keeps only grounded titles, with the
   Badcase Killer's own check (`jobs.stages.badcase_rules.fabrication_reasons`).

* `GroundedTeacher` (default): offline, CPU, writes for the user from their own clicks.
  The profile comes from the history's categories, brands, recurring title terms, the
  selling points their clicks keep coming back to and what they do (activities of
  config/lexicons/activities.yaml). Of the ad's selling points (and their clauses, for
  long real ones) it picks the one whose words this user's clicked items carry most above
  the catalog's base rate (log lift), so two users shown the same ad get different points;
  a query-aware title takes the point the query asks for first. It leads with the user's
  activity ("For hiking and camping: …") when the ad fits it, or with the point, or with
  the product; the character budget is respected and every word comes from the ad's
  texts, the query or the lexicons.
* `ChatTeacher`: any OpenAI-compatible chat endpoint (e.g. `vllm serve` with a large
  model), URL/model/key from the environment. Prompts are data files under
  `config/prompts/`; ad text is quoted as data inside them. Replies must be one JSON
  object with the expected fields; a bad reply is retried with exponential backoff, then
  recorded as failed (the job goes on). Replies are cached by prompt hash, so a re-run
  costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.platform.registry import HLLM, current_artifact, load_item_llm
from jobs.stages.badcase_rules import read_lines
from jobs.stages.embed_items import embed_texts
from jobs.stages.point_plan import choose_claims, content_words, normalize, rank_claims

log = logging.getLogger(__name__)


@dataclass
class UserHistory:
    user_id: str
    titles: list[str]  # clicked items, oldest first
    brands: list[str]
    categories: list[str]
    texts: list[str] = field(default_factory=list)  # the clicked items' full texts (with points)


@dataclass
class Profile:
    long_term_interests: list[str]
    short_term_interests: list[str]
    purchasing_preferences: list[str]
    user_needs: list[str]
    description: str

    def as_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class TitleTask:
    profile: Profile
    history: UserHistory
    original_title: str
    selling_points: list[str]
    query: str | None
    category: str = ""


@dataclass
class TitleDraft:
    user_information: str  # what of the profile went into the title ("" = nothing)
    selling_points: list[str]  # the selling points chosen for this user
    title: str


@dataclass
class Failure:
    reason: str  # invalid_json, endpoint_error, empty_history, ...
    detail: str = ""


PROFILE_FIELDS = {"long_term_interests": list, "short_term_interests": list,
                  "purchasing_preferences": list, "user_needs": list, "description": str}
TITLE_FIELDS = {"user_information": str, "selling_points": list, "title": str}


def humanize_category(category: str) -> str:
    """home_kitchen -> "home & kitchen", pet_supplies -> "pet supplies"."""
    parts = category.split("_")
    if len(parts) == 2 and parts[1] != "supplies":
        return f"{parts[0]} & {parts[1]}"
    return " ".join(parts)


def render_prompt(template: str, values: dict[str, str]) -> str:
    """Fill `{{name}}` slots in one pass: inserted text is never re-read as a template."""
    def fill(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"prompt slot {{{{{m.group(1)}}}}} has no value")
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", fill, template)


def quoted_lines(texts: list[str]) -> str:
    """Data for a prompt: one JSON string per line (quotes and newlines escaped)."""
    return "\n".join(json.dumps(t, ensure_ascii=False) for t in texts) or "(none)"


# ---------------------------------------------------------------------------------------
# Text embeddings (Item LLM): profiles, selling points, phrases, titles
# ---------------------------------------------------------------------------------------

class TextEmbedder:
    """Unit-norm Item LLM embeddings of short texts, memoized by text."""

    def __init__(self, item_llm, batch_size: int = 128):
        self.model = item_llm
        self.batch_size = batch_size
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        # by length: batches of similar lengths pad less
        todo = sorted(dict.fromkeys(t for t in texts if t not in self.cache), key=len)
        if todo:
            vecs, _ = embed_texts(self.model, todo, self.batch_size, "cpu", progress=False)
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
            self.cache.update(zip(todo, vecs, strict=True))
        dim = self.model.dim
        return (np.stack([self.cache[t] for t in texts]) if texts
                else np.zeros((0, dim), np.float32))


def default_embedder(cfg: Config) -> TextEmbedder:
    return TextEmbedder(load_item_llm(cfg, current_artifact(cfg, HLLM)),
                        cfg.hllm.embed.item_batch_size)


# ---------------------------------------------------------------------------------------
# Grounded offline teacher
# ---------------------------------------------------------------------------------------

_norm = normalize


def read_phrases(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise UserError(f"lexicon {path} not found (config badcase.audience_phrases)")
    return read_lines(Path(path))


class Activity:
    """An activity of the lexicon: its audience framing and the cue phrases that show it."""

    def __init__(self, name: str, audience: str, cues: list[str]):
        self.name, self.audience = name, audience
        self.pattern = re.compile(r"\b(?:" + "|".join(re.escape(c.lower()) for c in cues)
                                  + r")\b")

    def named_in(self, text: str) -> bool:
        return bool(self.pattern.search((text or "").lower()))


def read_activities(path: Path) -> list[Activity]:
    import yaml

    if not Path(path).is_file():
        raise UserError(f"activity lexicon {path} not found (config creator.teacher.activities)")
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    try:
        return [Activity(name, str(v["audience"]), [str(c) for c in v["cues"]])
                for name, v in data.items()]
    except (KeyError, TypeError):
        raise UserError(f"{path}: every activity needs `audience` and a list of `cues`") from None


class GroundedTeacher:
    """The offline teacher: no network, deterministic, titles grounded by construction."""

    name = "grounded"

    def __init__(self, cfg: Config, embed: Callable[[list[str]], np.ndarray] | None = None,
                 stopwords: set[str] | None = None):
        self.t = cfg.creator.teacher
        self.embed = embed  # not needed by this teacher; kept for the interface
        self.activities = read_activities(self.t.activities)
        stop_file = cfg.badcase.stopwords
        self.stopwords = stopwords if stopwords is not None else (
            {w.lower() for w in read_lines(stop_file)} if Path(stop_file).is_file() else set())
        self.doc_freq: Counter[str] = Counter()
        self.n_docs = 0

    def fit_catalog(self, item_texts: list[str]) -> None:
        """Base rates: in how many of the catalog's items each word appears."""
        self.doc_freq = Counter()
        for text in set(item_texts):
            self.doc_freq.update(self._content(text))
        self.n_docs = len(set(item_texts))

    def _content(self, text: str) -> set[str]:
        return content_words(text, self.stopwords)

    # -- step 1: profile --------------------------------------------------------------

    def _recurring_terms(self, titles: list[str], brands: set[str]) -> dict[str, int]:
        """Word n-grams (1-3) found in two or more distinct clicked titles (brands and
        stopwords excluded), the longest kept when a shorter one recurs only inside it."""
        brand_words = {w for b in brands for w in _norm(b).split()}
        counts: Counter[str] = Counter()
        for title in set(titles):
            words = _norm(title).split()
            grams = set()
            for n in (1, 2, 3):
                for i in range(len(words) - n + 1):
                    g = words[i:i + n]
                    if g[0] in self.stopwords or g[-1] in self.stopwords or len(set(g)) < n:
                        continue
                    if any(w in brand_words or len(w) < 3 for w in g):
                        continue
                    grams.add(" ".join(g))
            counts.update(grams)
        recurring = {g: c for g, c in counts.items() if c >= 2}
        return {g: c for g, c in recurring.items()
                if not any(g != o and f" {g} " in f" {o} " and recurring[o] >= c
                           for o in recurring)}

    def _word_counts(self, h: UserHistory) -> tuple[Counter[str], int]:
        """In how many of the user's distinct clicked items each word appears."""
        docs = set(h.texts or h.titles)
        counts: Counter[str] = Counter()
        for text in docs:
            counts.update(self._content(text))
        return counts, len(docs)

    def lift(self, words: set[str], counts: Counter[str], n: int) -> float:
        """Mean log lift of the words: how much more often the user's clicked items carry
        them than the catalog's items do (smoothed)."""
        if not words:
            return float("-inf")
        n_docs = max(self.n_docs, 1)
        lifts = []
        for w in words:
            base = (self.doc_freq[w] + 0.5) / (n_docs + 1)
            # the user's rate, shrunk toward the base rate by one pseudo-item: a word the
            # user never clicked scores below 0, one they always click far above
            lifts.append(np.log((counts[w] + base) / (n + 1)) - np.log(base))
        return float(np.mean(lifts))

    def activity_of(self, h: UserHistory) -> Activity | None:
        """The activity most of the user's distinct clicked items name (≥ the min share)."""
        docs = list(dict.fromkeys(h.texts or h.titles))
        if not docs:
            return None
        best, share = None, 0.0
        for act in self.activities:
            k = sum(act.named_in(d) for d in docs) / len(docs)
            if k > share:
                best, share = act, k
        return best if share >= self.t.activity_min_share else None

    def profiles(self, histories: list[UserHistory]) -> list[Profile | Failure]:
        window = self.t.recent_clicks
        out: list[Profile | Failure] = []
        for h in histories:
            if not h.titles:
                out.append(Failure("empty_history", "no clicked item with text"))
                continue
            out.append(self._profile(h, _ranked(self._recurring_terms(h.titles, set(h.brands)),
                                                h.titles, 5),
                                     _ranked(self._recurring_terms(h.titles[-window:],
                                                                   set(h.brands)),
                                             h.titles, 3)))
        return out

    def _profile(self, h: UserHistory, terms: list[str], recent_terms: list[str]) -> Profile:
        n = len(h.categories)
        cats = Counter(h.categories)
        top_count = cats.most_common(1)[0][1]
        long_term = [humanize_category(c) for c, k in cats.most_common(3)
                     if k >= max(2, 0.15 * n) or k == top_count]
        recent = h.categories[-self.t.recent_clicks:]
        short_term = [humanize_category(c) for c, k in Counter(recent).most_common(2)
                      if k >= 2 and (k / len(recent) > cats[c] / n + 0.05
                                     or humanize_category(c) not in long_term)]
        brands = [b for b, k in Counter(h.brands).most_common(3) if k >= 2]
        needs = recent_terms or terms[:2]
        values = self._valued_words(h)
        activity = self.activity_of(h)
        first = f"A shopper with a lasting interest in {_join(long_term)}"
        if short_term:
            first += f", lately drawn to {_join(short_term)}"
        parts = [first + "."]
        if activity:
            parts.append(f"They shop {activity.audience}.")
        if values:
            parts.append(f"What they click stands out for {_join(values)}.")
        if terms:
            parts.append(f"Their clicks keep returning to {_join(terms)}.")
        if brands:
            parts.append(f"They favour {_join(brands)}.")
        if needs:
            parts.append(f"Right now they look for {_join(needs)}.")
        return Profile(long_term, short_term,
                       values + [f"brand {b}" for b in brands] + terms[:2], needs,
                       " ".join(parts))

    def _valued_words(self, h: UserHistory, top: int = 3) -> list[str]:
        """The words the user's clicked items carry most above the catalog's base rate (in
        at least a quarter of them): what they value, as their clicks show it."""
        counts, n = self._word_counts(h)
        if not self.n_docs or n < 4:
            return []
        brand_words = {w for b in h.brands for w in _norm(b).split()}
        scored = [(self.lift({w}, counts, n), w) for w, k in counts.items()
                  if k >= max(2, n / 4) and w not in brand_words and not w.isdigit()]
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [w for s, w in scored[:top] if s > 0.5]

    # -- step 2: a title for this user --------------------------------------------------

    def titles(self, tasks: list[TitleTask]) -> list[TitleDraft | Failure]:
        cache: dict[str, tuple] = {}
        out: list[TitleDraft | Failure] = []
        for task in tasks:
            key = task.history.user_id
            if key not in cache:
                cache[key] = (*self._word_counts(task.history), self.activity_of(task.history))
            out.append(self._title_one(task, *cache[key]))
        return out

    def _title_one(self, task: TitleTask, counts: Counter[str], n: int,
                   activity: Activity | None) -> TitleDraft:
        original = (task.original_title or "").strip()
        budget = self.t.max_added_chars
        # the ad's claims not already in the title, this user's lift first; a query-aware
        # title takes the claim the query asks for first (the query shapes the title). The
        # same ranking gives a cycle's clusters their plan (jobs/stages/point_plan.py).
        ranked = rank_claims(original, task.selling_points, task.query,
                             lambda words: self.lift(words, counts, n), self.stopwords,
                             budget - 2)
        chosen = choose_claims(ranked, task.query, self.t.max_selling_points, budget)
        lead = ""
        if activity and any(activity.named_in(t) for t in [original, *task.selling_points]):
            lead = f"{activity.audience[0].upper()}{activity.audience[1:]}: "
        if lead and len(lead) + len(", ".join(chosen)) + 2 > budget:
            lead = ""  # the user's point matters more than the framing
        if lead:
            title = lead + original + "".join(f", {c}" for c in chosen)
        elif chosen and _zlib_bucket(original) == 0 and not task.query:
            # point-led for a share of ads: variety in form, decided by the ad
            head = chosen[0][0].upper() + chosen[0][1:]
            title = f"{head}: {original}" + "".join(f", {c}" for c in chosen[1:])
        else:
            title = original + "".join(f", {c}" for c in chosen)
        return TitleDraft(lead.rstrip(": ").lower() if lead else "", chosen, title)


def _zlib_bucket(text: str, buckets: int = 3) -> int:
    return zlib.crc32(text.encode()) % buckets


def _ranked(found: dict[str, int], titles: list[str], top: int) -> list[str]:
    """Recurring terms by how often they recur, then by how recently they were clicked."""
    last = {g: max((i for i, t in enumerate(titles) if f" {g} " in f" {_norm(t)} "), default=-1)
            for g in found}
    return sorted(found, key=lambda g: (-found[g], -last[g], g))[:top]


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------------------
# OpenAI-compatible chat teacher
# ---------------------------------------------------------------------------------------

class ReplyError(ValueError):
    """A reply that is not the JSON object the prompt asked for."""


def parse_json_reply(text: str, fields: dict[str, type]) -> dict[str, Any]:
    """The one JSON object of a reply (code fences and text around it tolerated), with
    every expected field of the expected type; lists hold strings."""
    text = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ReplyError("no JSON object in the reply")
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        raise ReplyError(f"invalid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ReplyError("the reply is not a JSON object")
    for key, kind in fields.items():
        if key not in obj:
            raise ReplyError(f"missing field {key!r}")
        value = obj[key]
        if kind is list and isinstance(value, str):
            value = [value] if value.strip() else []
        if not isinstance(value, kind) or (kind is list and not all(
                isinstance(v, str) for v in value)):
            raise ReplyError(f"field {key!r} is not a {kind.__name__}")
        obj[key] = value
    return obj


@dataclass
class ChatEndpoint:
    """An OpenAI-compatible chat endpoint named by environment variables."""

    url: str
    model: str
    api_key: str = field(repr=False, default="")

    @classmethod
    def from_env(cls, url_env: str, model_env: str, key_env: str,
                 environ: dict[str, str] | None = None) -> ChatEndpoint | None:
        env = os.environ if environ is None else environ
        if not env.get(url_env) or not env.get(model_env):
            return None
        return cls(env[url_env], env[model_env], env.get(key_env, ""))


class ChatClient:
    """JSON replies from a chat endpoint: retries with exponential backoff, a disk cache
    keyed by (model, prompt), and a Failure instead of an exception when it gives up."""

    def __init__(self, endpoint: ChatEndpoint, cache_dir: Path, timeout_s: float = 60,
                 retries: int = 3, backoff_s: float = 1.0, concurrency: int = 4,
                 max_tokens: int = 1024):
        from openai import OpenAI

        self.endpoint = endpoint
        # the SDK's own retries are off: ours also cover replies that are not valid JSON
        self.client = OpenAI(base_url=endpoint.url, api_key=endpoint.api_key or "none",
                             timeout=timeout_s, max_retries=0)
        self.cache_dir = Path(cache_dir)
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.max_tokens = max_tokens  # a reply is a small JSON object: cap a rambling model
        self.calls = 0  # requests sent (cache hits excluded)
        self.cache_hits = 0

    def _cache_path(self, prompt: str) -> Path:
        key = hashlib.sha256(f"{self.endpoint.model}\0{prompt}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def ask(self, prompt: str, fields: dict[str, type]) -> dict[str, Any] | Failure:
        cached = self._cache_path(prompt)
        if cached.is_file():
            self.cache_hits += 1
            return json.loads(cached.read_text())
        last = Failure("endpoint_error", "no attempt made")
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                self.calls += 1
                reply = self.client.chat.completions.create(
                    model=self.endpoint.model, temperature=0, max_tokens=self.max_tokens,
                    messages=[{"role": "user", "content": prompt}])
                text = reply.choices[0].message.content or ""
            except Exception as exc:  # network, HTTP status, timeout: retried
                last = Failure("endpoint_error", f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            try:
                obj = parse_json_reply(text, fields)
            except ReplyError as exc:
                last = Failure("invalid_json", f"{exc}; reply starts {text[:120]!r}")
                continue
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(obj, ensure_ascii=False))
            os.replace(tmp, cached)
            return obj
        return last

    def ask_many(self, prompts: list[str], fields: dict[str, type]
                 ) -> list[dict[str, Any] | Failure]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda p: self.ask(p, fields), prompts))


def load_prompt(cfg: Config, name: str) -> str:
    path = cfg.creator.prompts_dir / f"{name}.md"
    if not path.is_file():
        raise UserError(f"prompt file {path} not found (config creator.prompts_dir)")
    return path.read_text(encoding="utf-8")


class ChatTeacher:
    """The chain of thought through a chat endpoint (prompts in config/prompts/)."""

    name = "chat"

    def __init__(self, cfg: Config, client: ChatClient):
        self.cfg = cfg
        self.client = client
        self.profile_prompt = load_prompt(cfg, "profile")
        self.title_prompt = load_prompt(cfg, "title")
        self.check_prompt = load_prompt(cfg, "hallucination")
        self.phrases = read_phrases(cfg.badcase.audience_phrases)

    def profiles(self, histories: list[UserHistory]) -> list[Profile | Failure]:
        prompts = [render_prompt(self.profile_prompt, {"history": quoted_lines(h.titles)})
                   for h in histories]
        out: list[Profile | Failure] = []
        for h, reply in zip(histories, self.client.ask_many(prompts, PROFILE_FIELDS),
                            strict=True):
            if not h.titles:
                out.append(Failure("empty_history", "no clicked item with text"))
            elif isinstance(reply, Failure):
                out.append(reply)
            else:
                out.append(Profile(**{k: reply[k] for k in PROFILE_FIELDS}))
        return out

    def titles(self, tasks: list[TitleTask]) -> list[TitleDraft | Failure]:
        prompts = [render_prompt(self.title_prompt, {
            "max_added_chars": str(self.cfg.creator.teacher.max_added_chars),
            "audience_phrases": ", ".join(self.phrases),
            "profile": t.profile.as_json(),
            "history": quoted_lines(t.history.titles[-50:]),
            "original_title": json.dumps(t.original_title, ensure_ascii=False),
            "selling_points": json.dumps(t.selling_points, ensure_ascii=False),
            "query": json.dumps(t.query, ensure_ascii=False) if t.query else "(none)",
        }) for t in tasks]
        out: list[TitleDraft | Failure] = []
        for reply in self.client.ask_many(prompts, TITLE_FIELDS):
            out.append(reply if isinstance(reply, Failure) else
                       TitleDraft(reply["user_information"], reply["selling_points"],
                                  reply["title"].strip()))
        return out

    def hallucination_check(self, tasks: list[TitleTask], titles: list[str]
                            ) -> list[list[str] | Failure]:
        """The LLM side of the filter (§3.2.3): new or conflicting information per title."""
        prompts = [render_prompt(self.check_prompt, {
            "original_title": json.dumps(t.original_title, ensure_ascii=False),
            "selling_points": json.dumps(t.selling_points, ensure_ascii=False),
            "query": json.dumps(t.query, ensure_ascii=False) if t.query else "(none)",
            "title": json.dumps(title, ensure_ascii=False),
        }) for t, title in zip(tasks, titles, strict=True)]
        fields = {"new_information": list, "conflicting_information": list}
        return [r if isinstance(r, Failure) else r["new_information"] +
                r["conflicting_information"]
                for r in self.client.ask_many(prompts, fields)]


def make_teacher(cfg: Config, embed: Callable[[list[str]], np.ndarray] | None = None,
                 environ: dict[str, str] | None = None):
    """The configured teacher. The chat teacher needs its endpoint in the environment."""
    t = cfg.creator.teacher
    if t.kind == "grounded":
        return GroundedTeacher(cfg, embed)
    endpoint = ChatEndpoint.from_env(t.url_env, t.model_env, t.api_key_env, environ)
    if endpoint is None:
        raise UserError(f"creator.teacher.kind is chat but {t.url_env} / {t.model_env} are not "
                        "set: export the endpoint's base URL and model name")
    return ChatTeacher(cfg, ChatClient(endpoint, t.cache_dir, t.timeout_s, t.retries,
                                       t.backoff_s, t.concurrency))
