"""The grounded decoder (models/grounded_decoding.py) as a vLLM v1 logits processor.

Passed to the engine by name, `LLM(logits_processors=["models.grounded_vllm:VLLMGroundedProcessor"])`,
so the engine's worker process imports it. A request is grounded when its sampling params
carry `extra_args={"grounding": {"artifact": DIR, "texts": [...], "plan": [...],
"phrases_off": [...]}}` (DIR: a saved Creative LLM, whose `lm/` tokenizer and
`creative_llm.json` lexicon phrases and stopwords are read once per process; the rest is
`CreativeLLM.grounding_spec`); other requests pass through untouched.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from models.grounded_decoding import grounding_for, mask_logits, token_table

NAME = "models.grounded_vllm:VLLMGroundedProcessor"


class VLLMGroundedProcessor(AdapterLogitsProcessor):
    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is the most likely

    def new_req_logits_processor(self, params):
        spec = (params.extra_args or {}).get("grounding")
        if not spec:
            return None
        artifact = spec["artifact"]
        grounding = grounding_for(token_table(str(Path(artifact) / "lm")), spec["texts"],
                                  *_lexicons(artifact), spec.get("plan"),
                                  tuple(spec.get("phrases_off", ())))

        def apply(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            return mask_logits(logits, grounding.allowed(output_ids), grounding, output_ids)

        return apply


@functools.lru_cache(maxsize=4)
def _lexicons(artifact: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(phrases, stopwords) the artifact was trained with."""
    c = json.loads((Path(artifact) / "creative_llm.json").read_text())
    return tuple(c["phrases"]), tuple(c.get("stopwords", []))
