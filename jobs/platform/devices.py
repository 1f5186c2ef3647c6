"""Picking a device and seeding: one place for every stage and trainer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np


def pick_device(setting: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; any other value is used as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_is_fast() -> bool:
    """Whether bfloat16 matmuls have hardware support here: a CUDA GPU that supports them,
    or a CPU with AVX512-BF16 or AMX-BF16. Elsewhere (an AVX2-only CPU) vLLM's CPU backend
    falls back to plain torch kernels in bfloat16, many times slower than float32."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:  # not Linux: no way to tell, take the safe one
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(setting: str) -> str:
    """`auto` -> bfloat16 where it is fast (`bf16_is_fast`), else float32."""
    if setting != "auto":
        return setting
    return "bfloat16" if bf16_is_fast() else "float32"


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs from one seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
