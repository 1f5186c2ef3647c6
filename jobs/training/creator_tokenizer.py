"""The Creative LLM's tokenizer: byte-level BPE trained here with the `tokenizers` library.

Trained on the project's own corpus (ad titles, selling points, brands, categories, search
queries, the teacher's interest descriptions and titles), so a small model spends its
vocabulary on the words ads use. Byte-level: any text tokenizes, nothing is `<unk>`.
Saved as a Hugging Face fast tokenizer (`tokenizer.json` + `tokenizer_config.json`), which
transformers and vLLM load from the model directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from models.creative_llm import INTEREST, OUT, PLAN, POINT, PROFILE, QUERY, TITLE

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, TITLE, POINT, QUERY, OUT, PROFILE, INTEREST, PLAN]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path | None = None):
    """Byte-level BPE over `texts`; returns a transformers `PreTrainedTokenizerFast`
    (saved to `out_dir` when given)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator((t for t in texts if t), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=UNK,
                                   additional_special_tokens=SPECIAL_TOKENS[4:],
                                   clean_up_tokenization_spaces=False)
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast
