"""Item-User Predictor: an MLP-Mixer over (user embedding, item embedding) -> click logit.

HLLM-Creator §3.4.2 (cls loss) and §3.5 (matching clusters to ads). The two embeddings are
two tokens of `dim` channels; each Mixer block mixes across the two tokens, then across
channels. The paper uses 8 layers of width 2048; the CPU default is small.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class PredictorConfig:
    dim: int = 384  # width of user and item embeddings
    depth: int = 2
    width: int = 512  # channel-mixing hidden width
    dropout: float = 0.1


class MixerBlock(nn.Module):
    def __init__(self, dim: int, width: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.tokens = nn.Sequential(nn.Linear(2, 8), nn.GELU(), nn.Linear(8, 2))
        self.norm2 = nn.LayerNorm(dim)
        self.channels = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 2, dim)
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # across tokens
        return x + self.channels(self.norm2(x))  # across channels


class ItemUserPredictor(nn.Module):
    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        self.blocks = nn.Sequential(*[MixerBlock(config.dim, config.width, config.dropout)
                                      for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(2 * config.dim, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (B, dim), items (B, dim) -> click logits (B,)."""
        x = torch.stack([users, items], dim=1)  # (B, 2, dim)
        x = self.norm(self.blocks(x))
        return self.head(x.flatten(1)).squeeze(-1)

    def save(self, out: Path) -> None:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), out / "model.safetensors")
        (out / "predictor.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, path: Path) -> ItemUserPredictor:
        from safetensors.torch import load_file

        path = Path(path)
        model = cls(PredictorConfig(**json.loads((path / "predictor.json").read_text())))
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model
