"""User LLM: a decoder over item embeddings (oldest first) + a learned `[USER]` token.

HLLM late fusion (HLLM-Creator §3.3): the user's history of item embeddings E_1..E_n is
projected to the decoder's width, a learned `[USER]` vector is appended, and the last
layer's hidden state at `[USER]` - projected back to the item space - is the user
embedding U. The hidden state after each item predicts the next item (training).

With `history_skip`, U also gets the mean of the history's item embeddings (a residual in
the item space, scaled by a learned gate): a small decoder trained on next-item prediction
keeps what predicts the next click and drops the rest, while the mean keeps what the user's
clicks are about (what they value within a category, what they do across categories),
which is what clustering and the Creative LLM read U for.

The default decoder is a small Llama-architecture model trained here; any Hugging Face
decoder directory (e.g. TinyLlama-1.1B on a GPU machine) can be used via `base_model`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class UserLLMConfig:
    item_dim: int = 384  # width of the Item LLM's embeddings
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    max_history: int = 50  # items fed to the decoder (most recent kept)
    base_model: str | None = None  # a local HF decoder directory instead of the small default
    history_skip: bool = False  # U += gate * mean(history items); False for models saved before


class UserLLM(nn.Module):
    def __init__(self, config: UserLLMConfig):
        super().__init__()
        from transformers import AutoModel, LlamaConfig, LlamaModel

        self.config = config
        if config.base_model:
            self.decoder = AutoModel.from_pretrained(config.base_model, local_files_only=True)
            width = self.decoder.config.hidden_size
        else:
            width = config.hidden_size
            self.decoder = LlamaModel(LlamaConfig(
                vocab_size=1,  # inputs are embeddings, never token ids
                bos_token_id=None, eos_token_id=None, pad_token_id=None,
                hidden_size=width,
                intermediate_size=config.intermediate_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                num_key_value_heads=config.num_heads,
                max_position_embeddings=config.max_history + 1,
            ))
        self.item_in = nn.Linear(config.item_dim, width)
        self.user_token = nn.Parameter(torch.randn(width) * 0.02)
        self.out = nn.Linear(width, config.item_dim)  # back to the item space
        if config.history_skip:
            self.history_gate = nn.Parameter(torch.tensor(1.0))

    def forward(self, items: torch.Tensor, mask: torch.Tensor,
                with_states: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """items (B, T, d_item), left-padded (most recent item last); mask (B, T) 1 = item.
        Returns (states (B, T, d_item): the prediction after each item, or None when
                 with_states is False (embedding users only needs [USER]),
                 users (B, d_item): the state at [USER])."""
        b = items.shape[0]
        x = self.item_in(items)  # (B, T, w)
        x = torch.cat([x, self.user_token.expand(b, 1, -1)], dim=1)  # (B, T+1, w)
        mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)  # (B, T+1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # left padding: first item is 0
        hidden = self.decoder(inputs_embeds=x, attention_mask=mask,
                              position_ids=positions).last_hidden_state  # (B, T+1, w)
        users = self.out(hidden[:, -1])
        if self.config.history_skip:
            m = mask[:, :-1, None].to(items.dtype)
            mean = (items * m).sum(1) / m.sum(1).clamp(min=1)
            users = users + self.history_gate * mean
        if not with_states:
            return None, users
        return self.out(hidden[:, :-1]), users

    def save(self, out: Path) -> None:
        """Hugging Face format: the decoder via save_pretrained (config.json + safetensors),
        the [USER] token and the two projections beside it, and this model's config."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.decoder.save_pretrained(out / "decoder")
        heads = {k: v.contiguous() for k, v in self.state_dict().items()
                 if not k.startswith("decoder.")}
        save_file(heads, out / "heads.safetensors")
        (out / "user_llm.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, path: Path) -> UserLLM:
        from dataclasses import replace

        from safetensors.torch import load_file

        path = Path(path)
        config = UserLLMConfig(**json.loads((path / "user_llm.json").read_text()))
        model = cls(replace(config, base_model=str(path / "decoder")))  # weights from disk
        model.config = config
        missing, unexpected = model.load_state_dict(load_file(path / "heads.safetensors"),
                                                    strict=False)
        if unexpected or any(not k.startswith("decoder.") for k in missing):
            raise ValueError(f"{path}: heads do not match the model ({missing}, {unexpected})")
        return model


def left_pad(histories: list[torch.Tensor], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (n_i, d) histories into (B, T, d) left-padded, keeping the most recent max_len."""
    d = histories[0].shape[-1]
    t = min(max_len, max(h.shape[0] for h in histories))
    items = torch.zeros(len(histories), t, d)
    mask = torch.zeros(len(histories), t, dtype=torch.long)
    for i, h in enumerate(histories):
        h = h[-t:]
        items[i, t - h.shape[0]:] = h
        mask[i, t - h.shape[0]:] = 1
    return items, mask
