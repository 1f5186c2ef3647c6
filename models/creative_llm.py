"""Creative LLM: [proj(U), ad text (, query)] -> a personalized ad title (HLLM-Creator §3.3).

Any Hugging Face causal LM. The user embedding U (a user's, in training; a cluster
centroid, at generation: same 384-d space) goes through one linear projection to the LM's
hidden size and is placed right after `<s>` (a pretrained LM's first position is its
attention sink), before the token embeddings of the ad text:

    position 0    1        2..n
    <s>           proj(U)  [TITLE] title… [POINT] point… [POINT] point… ([QUERY] query…) [OUT]
                           -> the LM continues with the title tokens and </s>

The same LM also serves the two auxiliary heads of §3.4 (shared parameters, as in §4.1.2):
* User Feature Extractor: `<s> [PROFILE] description… [INTEREST]` -> the last layer's
  state at [INTEREST] is the interest feature V (align loss: InfoNCE(proj(U), V));
* User Interest Decoder: `<s> proj(U) [PROFILE]` -> the description tokens (recon loss).

The LM is a pretrained causal LM (the product default: SmolLM2-135M-Instruct, see
jobs/platform/base_models.py) whose own tokens spell the markers (`Title:`, `Selling
point:` ...), so no new, untrained token enters its vocabulary; or, as a test fixture
only, a small Llama-architecture decoder trained from scratch whose tokenizer has the
markers as special tokens. Saved in Hugging Face format: `lm/` is a plain causal LM with
its tokenizer, which vLLM loads as is; the projection lives beside it
(`user_projection.safetensors`), because the engine takes ready-made `prompt_embeds` and
never sees U.

Decoding is grounded at the word level (models/grounded_decoding.py): every word of a
title is a word of its ad's texts, its query or the lexicons, and no bigram repeats.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Prompt structure markers: special tokens of a tokenizer trained here (the test fixture),
# or, for a pretrained tokenizer without them, these texts in its own tokens.
TITLE, POINT, QUERY, OUT, PROFILE, INTEREST, PLAN = (
    "[TITLE]", "[POINT]", "[QUERY]", "[OUT]", "[PROFILE]", "[INTEREST]", "[PLAN]")
MARKER_TEXT = {TITLE: "Product title:", POINT: "\nSelling point:", QUERY: "\nSearch query:",
               OUT: "\nAd title:", PROFILE: "User interests:", INTEREST: "\nIn short:",
               PLAN: "\nHighlight:"}


@dataclass
class CreativeLLMConfig:
    user_dim: int = 384  # width of U (the User LLM's embedding = the item space)
    base_model: str | None = None  # a local HF causal-LM directory instead of the default
    vocab_size: int = 3000  # default model: the trained tokenizer's size
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 2
    intermediate_size: int = 384
    max_title_tokens: int = 40
    max_prompt_tokens: int = 128  # including the U position
    max_new_tokens: int = 48
    max_description_tokens: int = 32  # the recon and align passes' share of training cost
    trainable_layers: int | None = None  # fine-tune only the top N layers (None: all)
    # Grounded decoding: a title may only use tokens of its ad's texts (title, selling
    # points, query), of these phrases (the shared audience and marketing lexicons, saved
    # with the model) and punctuation, so a small model cannot spell a product it was not
    # given. Each token is allowed, not each word: rare recombinations remain possible.
    # U is scaled to a fixed norm (sqrt(user_dim)) before the projection: clusters are
    # formed by cosine, and a centroid (a mean of users) is much shorter than any user, so
    # only the direction is kept; training users and generation centroids then match.
    normalize_user: bool = True
    # U minus the population's mean user before that scaling: a centroid is a mean of many
    # users, so most of it is the direction every user shares; centred, what sets the
    # cluster apart gets a typical user's weight, as each user's own deviation did in
    # training (the mean is saved with the projection)
    center_user: bool = False
    # the prompt carries the audience's point plan (False for models saved before it)
    use_plan: bool = False
    grounded_decoding: bool = True
    phrases: list[str] = field(default_factory=list)
    stopwords: list[str] = field(default_factory=list)  # words a title may add anywhere

    @property
    def max_model_len(self) -> int:
        return max(self.max_prompt_tokens + self.max_new_tokens, self.max_description_tokens + 4)


class CreativeLLM(nn.Module):
    def __init__(self, config: CreativeLLMConfig, tokenizer, lm: nn.Module | None = None):
        super().__init__()
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

        self.config = config
        self.tokenizer = tokenizer
        if lm is None and config.base_model:
            lm = AutoModelForCausalLM.from_pretrained(config.base_model, local_files_only=True,
                                                      dtype=torch.float32)
            if lm.get_input_embeddings().num_embeddings < len(tokenizer):
                lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        elif lm is None:
            lm = LlamaForCausalLM(LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                num_key_value_heads=config.num_heads,
                max_position_embeddings=max(256, config.max_model_len),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=True,
            ))
        self.lm = lm
        self.hidden_size = lm.get_input_embeddings().embedding_dim
        self.user_proj = nn.Linear(config.user_dim, self.hidden_size)  # U -> position 1
        self.register_buffer("user_center", torch.zeros(config.user_dim), persistent=False)
        if config.user_dim:
            self._match_token_scale()
        self.title_ids, self.point_ids, self.query_ids, self.out_ids = (
            self._marker(TITLE), self._marker(POINT), self._marker(QUERY), self._marker(OUT))
        self.profile_ids, self.interest_ids = self._marker(PROFILE), self._marker(INTEREST)
        self.plan_ids = self._marker(PLAN)
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._table = None
        self._fit: dict[str, re.Pattern] = {}  # activity framing -> the cues an ad must name

    @torch.no_grad()
    def _match_token_scale(self) -> None:
        """Start proj(U) at the typical norm of the LM's token embeddings: a vector several
        times longer than any token would swamp a pretrained LM's first layers."""
        emb = self.lm.get_input_embeddings().weight
        target = emb.float().norm(dim=1).median()
        probe = self.user_features(torch.randn(64, self.config.user_dim)).norm(dim=1).mean()
        scale = float(target / probe)
        self.user_proj.weight.mul_(scale)
        self.user_proj.bias.mul_(scale)

    @torch.no_grad()
    def align_user_projection(self, item_vecs: torch.Tensor, texts: list[str],
                              ridge: float = 0.1) -> float:
        """Start proj(U) as the linear map from the Item LLM's space (where U lives: the
        HLLM predicts the next item's embedding) to this LM's token space, fitted by ridge
        regression on the catalog: an item's embedding -> the mean of its text's token
        embeddings. A user then enters the LM as a soft word close to the words of what
        they click, which a pretrained LM can already relate to the ad's words; training
        refines it. Returns the fit's R² (held in `creator.json`)."""
        emb = self.lm.get_input_embeddings().weight.float()
        targets = torch.stack([emb[torch.as_tensor(self._ids(" " + t)[:64] or [self.bos_id])
                                   ].mean(0) for t in texts])  # (n, H)
        a = self._prepare_users(item_vecs).float()
        a_mean, b_mean = a.mean(0), targets.mean(0)
        ac, bc = a - a_mean, targets - b_mean
        gram = ac.T @ ac
        lam = ridge * gram.trace() / gram.shape[0]
        w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0]), ac.T @ bc)  # (d, H)
        r2 = float(1 - ((ac @ w - bc) ** 2).sum() / (bc ** 2).sum())
        bias = b_mean - a_mean @ w
        # at the LM's token scale, as _match_token_scale does for a random start
        scale = float(emb.norm(dim=1).median() / (a @ w + bias).norm(dim=1).mean())
        self.user_proj.weight.copy_((w * scale).T.to(self.user_proj.weight.dtype))
        self.user_proj.bias.copy_((bias * scale).to(self.user_proj.bias.dtype))
        return r2

    def _marker(self, name: str) -> list[int]:
        """A marker's token ids: its special token, or its text in the LM's own tokens."""
        if name in self.tokenizer.get_vocab():
            return [self.tokenizer.convert_tokens_to_ids(name)]
        return self.tokenizer(MARKER_TEXT[name], add_special_tokens=False)["input_ids"]

    def freeze_lower_layers(self) -> int:
        """Train only the top `trainable_layers` decoder layers, the final norm and the
        projection (the token embeddings and the tied LM head stay frozen): on a CPU the
        budget is training tokens, and the lower layers are what backpropagation costs.
        Returns the number of trainable parameters."""
        n = self.config.trainable_layers
        if n is not None:
            self.lm.requires_grad_(False)
            layers = self.lm.model.layers
            for layer in layers[max(len(layers) - n, 0):]:
                layer.requires_grad_(True)
            self.lm.model.norm.requires_grad_(True)
        self.user_proj.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----- token layouts -------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, title: str, selling_points: list[str] | None, query: str | None,
                   plan: list[str] | None = None) -> tuple[list[int], dict[str, int]]:
        """The ad part of the prompt (after U). Returns (ids, truncation counts): a title
        past `max_title_tokens` is cut; selling points are dropped from the end (then the
        query is cut) until U + the prompt fit `max_prompt_tokens`. `plan`: the claims this
        audience's title should carry (jobs/stages/point_plan.py), kept whole."""
        c = self.config
        title_ids = self._ids(" " + (title or ""))
        counts = {"title_truncated": int(len(title_ids) > c.max_title_tokens),
                  "points_dropped": 0, "query_truncated": 0}
        head = [self.bos_id, *self.title_ids] + title_ids[: c.max_title_tokens]
        points = [self.point_ids + self._ids(" " + p) for p in (selling_points or []) if p]
        tail = self.query_ids + self._ids(" " + query) if query else []
        plan = plan if c.use_plan else None
        highlight = [i for p in (plan or []) if p for i in self.plan_ids + self._ids(" " + p)]
        # U, the plan and the output marker
        budget = c.max_prompt_tokens - 1 - len(self.out_ids) - len(highlight)
        while points and len(head) + sum(map(len, points)) + len(tail) > budget:
            points.pop()
            counts["points_dropped"] += 1
        room = budget - len(head) - sum(map(len, points))
        if len(tail) > room:
            tail = tail[: max(room, 0)]
            counts["query_truncated"] = 1
        return head + [i for p in points for i in p] + tail + highlight + self.out_ids, counts

    def target_ids(self, title: str) -> list[int]:
        return self._ids(" " + title)[: self.config.max_new_tokens - 1] + [self.eos_id]

    def description_ids(self, description: str) -> list[int]:
        return self._ids(" " + description)[: self.config.max_description_tokens]

    def grounding_spec(self, title: str, selling_points: list[str] | None, query: str | None,
                       plan: list[str] | None = None) -> dict:
        """What a request's grounded decoder is built from (`grounding_for`'s arguments
        beyond the artifact's lexicons): its texts, its plan, and the activity framings its
        texts do not fit (`set_activity_fit`). The vLLM processor gets it as `extra_args`."""
        texts = [title or "", *(selling_points or []), query or ""]
        low = " ".join(texts).lower()
        off = sorted(p.lower() for p in self.config.phrases
                     if p.lower() in self._fit and not self._fit[p.lower()].search(low))
        return {"texts": texts, "plan": list(plan or []), "phrases_off": off}

    def grounding(self, title: str, selling_points: list[str] | None, query: str | None,
                  plan: list[str] | None = None):
        """The request's grounded decoder (None when grounded decoding is off); `plan`: the
        claims the title must carry (lexically constrained)."""
        if not self.config.grounded_decoding:
            return None
        from models.grounded_decoding import TokenTable, grounding_for

        if self._table is None:
            self._table = TokenTable(self.tokenizer)
        spec = self.grounding_spec(title, selling_points, query, plan)
        return grounding_for(self._table, spec["texts"], tuple(self.config.phrases),
                             tuple(self.config.stopwords), spec["plan"],
                             tuple(spec["phrases_off"]))

    def set_activity_fit(self, cues_by_framing: dict[str, list[str]]) -> None:
        """Activity framings (lexicon phrases such as "for hiking and camping") that the
        decoder allows only for an ad whose title, selling points or query name one of the
        activity's cues: a framing the ad does not support is never written (the Badcase
        Killer's `misfit_audience` kills it anyway)."""
        self._fit = {f.lower(): re.compile(r"\b(?:" + "|".join(re.escape(c.lower())
                                                               for c in cues) + r")\b")
                     for f, cues in cues_by_framing.items() if cues}

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # ----- forward passes ------------------------------------------------------------

    def _embed(self, users: torch.Tensor | None, seqs: list[list[int]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (B, T, H) input embeddings and (B, T) mask; with `users` (B, d_user),
        proj(U) is position 1 of every row (after <s>)."""
        device = self.user_proj.weight.device
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s, device=device)
            mask[i, : len(s)] = 1
        x = self.lm.get_input_embeddings()(ids)  # (B, T, H)
        if users is not None:
            # proj(U) right after <s>: a pretrained LM keeps its first position (the
            # attention sink) as it was trained
            u = self.user_features(users.to(device, x.dtype))[:, None]  # (B, 1, H)
            x = torch.cat([x[:, :1], u, x[:, 1:]], dim=1)  # (B, 1 + T, H)
            mask = torch.cat([mask.new_ones(len(seqs), 1), mask], dim=1)
        return x, mask

    def sequence_loss(self, users: torch.Tensor, prefixes: list[list[int]],
                      targets: list[list[int]]) -> torch.Tensor:
        """Next-token loss on `targets` only, given [proj(U), prefix] (gen and recon losses)."""
        x, mask = self._embed(users, [p + t for p, t in zip(prefixes, targets, strict=True)])
        labels = torch.full(mask.shape, -100, dtype=torch.long, device=x.device)
        for i, (p, t) in enumerate(zip(prefixes, targets, strict=True)):
            start = 1 + len(p)  # after U and the prefix
            labels[i, start: start + len(t)] = torch.as_tensor(t, device=x.device)
        hidden = self.lm.base_model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        # the LM head (vocabulary-wide) only where a target token is predicted: (N, V)
        predicts = labels[:, 1:] != -100  # (B, T-1): position t predicts token t+1
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][predicts])
        return F.cross_entropy(logits.float(), labels[:, 1:][predicts])

    def interest_features(self, descriptions: list[list[int]]) -> torch.Tensor:
        """(B, H): the last layer's state at [INTEREST] after `<s> [PROFILE] description`."""
        seqs = [[self.bos_id, *self.profile_ids] + d + self.interest_ids for d in descriptions]
        x, mask = self._embed(None, seqs)
        hidden = self.lm(inputs_embeds=x, attention_mask=mask,
                         output_hidden_states=True).hidden_states[-1]  # (B, T, H)
        last = mask.sum(1) - 1
        return hidden[torch.arange(len(seqs), device=x.device), last]

    def set_user_center(self, users: torch.Tensor) -> None:
        """Centre U on the mean of these users (the training population) from now on."""
        self.user_center.copy_(users.float().mean(0).to(self.user_center.device))
        self.config.center_user = True

    def _prepare_users(self, users: torch.Tensor) -> torch.Tensor:
        users = users.to(self.user_proj.weight.device, self.user_proj.weight.dtype)
        if self.config.center_user:
            users = users - self.user_center.to(users.dtype)
        if self.config.normalize_user:
            users = F.normalize(users, dim=-1) * self.config.user_dim ** 0.5
        return users

    def user_features(self, users: torch.Tensor) -> torch.Tensor:
        """(B, H): proj(U), the LM-side user representation (position 0; the align loss
        supervises it). users (B, d_user)."""
        return self.user_proj(self._prepare_users(users))

    def prompt_embeds(self, users: torch.Tensor, prompts: list[list[int]]) -> list[torch.Tensor]:
        """Per request a (1 + n_i, H) tensor [<s>, proj(U), token embeddings]: what vLLM
        takes."""
        with torch.no_grad():
            x, mask = self._embed(users, prompts)
        return [x[i, : int(mask[i].sum())].detach().cpu() for i in range(len(prompts))]

    @torch.no_grad()
    def generate(self, users: torch.Tensor, prompts: list[list[int]], max_new_tokens: int,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 groundings: list | None = None,
                 min_new_tokens: int = 0) -> list[tuple[list[int], bool]]:
        """Hugging Face `generate` over a batch (left-padded inputs_embeds). `groundings`
        (one per request, models/grounded_decoding.py) keeps each title to its own words.
        Returns per request (new token ids without the end token, whether it ended)."""
        from transformers import LogitsProcessorList

        from models.grounded_decoding import GroundedLogitsProcessor

        embeds = self.prompt_embeds(users, prompts)
        device = self.user_proj.weight.device
        width = max(e.shape[0] for e in embeds)
        x = torch.zeros(len(embeds), width, self.hidden_size, dtype=embeds[0].dtype)
        mask = torch.zeros(len(embeds), width, dtype=torch.long)
        for i, e in enumerate(embeds):
            x[i, width - e.shape[0]:] = e
            mask[i, width - e.shape[0]:] = 1
        if seed is not None:
            torch.manual_seed(seed)
        sample = temperature > 0
        out = self.lm.generate(
            inputs_embeds=x.to(device), attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
            do_sample=sample,
            temperature=temperature if sample else None, top_p=top_p if sample else None,
            top_k=None, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            logits_processor=LogitsProcessorList([GroundedLogitsProcessor(groundings)])
            if groundings and all(g is not None for g in groundings) else None)
        result = []
        for row in out.tolist():  # inputs_embeds: the output holds only new tokens
            ended = self.eos_id in row
            if ended:
                row = row[: row.index(self.eos_id)]
            result.append((row, ended))
        return result

    # ----- save / load ---------------------------------------------------------------

    def save(self, out: Path) -> None:
        """HF format: `lm/` (model + tokenizer + generation config, loadable by vLLM and
        transformers), `user_projection.safetensors`, `creative_llm.json`."""
        from safetensors.torch import save_file

        out = Path(out)
        (out / "lm").mkdir(parents=True, exist_ok=True)
        self.lm.generation_config.eos_token_id = self.eos_id
        self.lm.generation_config.pad_token_id = self.pad_id
        self.lm.generation_config.bos_token_id = self.bos_id
        self.lm.save_pretrained(out / "lm")
        self.tokenizer.save_pretrained(out / "lm")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.user_proj.state_dict().items()}
        if self.config.center_user:
            tensors["user_center"] = self.user_center.detach().contiguous().cpu()
        save_file(tensors, out / "user_projection.safetensors")
        (out / "creative_llm.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, path: Path, with_lm: bool = True) -> CreativeLLM:
        """The model from a saved directory. `with_lm=False` loads only the tokenizer, the
        projection and the token-embedding table (what building vLLM's prompt_embeds needs)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        config = CreativeLLMConfig(**json.loads((path / "creative_llm.json").read_text()))
        tokenizer = AutoTokenizer.from_pretrained(path / "lm", local_files_only=True)
        if with_lm:
            lm = AutoModelForCausalLM.from_pretrained(path / "lm", local_files_only=True,
                                                      dtype=torch.float32)
        else:
            lm = _EmbeddingOnly(path / "lm", AutoConfig.from_pretrained(path / "lm"))
        model = cls(config, tokenizer, lm=lm)
        tensors = load_file(path / "user_projection.safetensors")
        center = tensors.pop("user_center", None)
        model.user_proj.load_state_dict(tensors)
        if center is not None:
            model.user_center.copy_(center)
        return model.eval()


class _EmbeddingOnly(nn.Module):
    """The LM's token-embedding table alone (the vLLM backend runs the LM itself)."""

    def __init__(self, lm_dir: Path, lm_config):
        super().__init__()
        from safetensors import safe_open

        weight = None
        for f in sorted(Path(lm_dir).glob("*.safetensors")):
            with safe_open(f, "pt") as st:
                for key in st.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    if key.endswith("embed_tokens.weight"):
                        weight = st.get_tensor(key).float()
        if weight is None:
            raise ValueError(f"{lm_dir}: no embed_tokens weight found")
        self.embed = nn.Embedding.from_pretrained(weight, freeze=True)
        self.config = lm_config

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed
