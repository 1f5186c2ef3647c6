"""Picking a device and seeding: one place for every stage and trainer."""

from __future__ import annotations

import random

import numpy as np


def pick_device(setting: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; any other value is used as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs from one seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
