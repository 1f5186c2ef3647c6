"""Grounded decoding (models/grounded_decoding.py): every word comes whole from the sources,
numbers only from the ad's own texts, no loops, and titles end only where a title may end."""

from __future__ import annotations

import pytest
import torch

from jobs.training.creator_tokenizer import train_tokenizer
from models.grounded_decoding import (
    GroundedLogitsProcessor,
    TokenTable,
    grounding_for,
    source_words,
    word_limits,
)

AD = ["Pentel EnerGel Deluxe RTX Gel Pen, 0.7mm, Black Ink, 12-Pack (BL77-A)",
      "Quick-drying ink for smooth writing", ""]
PHRASES = ("For office workers", "Ships within 24 hours", "Free returns", "shop now")
STOPWORDS = ("for", "the", "a", "and", "with")


@pytest.fixture(scope="module")
def tok():
    corpus = AD + list(PHRASES) + list(STOPWORDS) + ["Brother HL-3170CDW printer", "Pentil HHL-3070HDD",
                                   "for the a an and with"] * 3
    return train_tokenizer(corpus * 20, 400)


@pytest.fixture(scope="module")
def grounding(tok):
    return grounding_for(TokenTable(tok), AD, PHRASES, STOPWORDS)


def walk(tok, g, text: str) -> tuple[bool, bool]:
    """(every token of `text` was allowed in turn, the end token is allowed after it)"""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for k in range(len(ids)):
        if ids[k] not in g.allowed(ids[:k]):
            return False, False
    return True, tok.eos_token_id in g.allowed(ids)


@pytest.mark.parametrize("text", [
    "Pentel EnerGel Deluxe, Black Ink",
    "For office workers: Pentel EnerGel Gel Pen, 12-Pack",
    "Pentel Gel Pen - Quick-drying ink for smooth writing",
    "Black Ink Gel Pen, 0.7mm",
    "Pentel Gel Pen, Free returns, shop now",
    "Pentel Gel Pen for the Black Ink",  # glue after the ad's word, an article before one
])
def test_titles_of_source_words_are_allowed_and_may_end(tok, grounding, text):
    assert walk(tok, grounding, text) == (True, True)


@pytest.mark.parametrize("text", [
    "Pentil EnerGel",  # a corrupted brand: subwords recombined
    "Pentel HHL-3070HDD",  # a model code not in the sources
    "Pentel Gel Pen 24",  # a number from the lexicons only
    "Pentel Gel Pen, 12, Black Ink",  # a number without what it counts ("12-Pack" is whole)
    "Black Ink Black Ink",  # a repeated bigram
    "Pentel Pentel",  # a word right after itself
    "Pentel Gel Pen, the Black Ink",  # a clause opens with a filler word
    "Black Ink Gel Pen, Gel Pen",  # a repeat in another spelling than the source's
    "Free returns, Free",  # a lexicon word a second time
    "Workers Pentel Gel Pen",  # a phrase's inner word alone
    "Pentel Gel Pen, the Pentel",  # an article before a word of no kind it could name
    "Pentel Gel Pen, with Black Ink",  # a clause opened by a filler outside a phrase
    "Pentel Gel Pen for the a Black Ink",  # a filler after a filler, outside a phrase
    "For office workers: Pentel Gel Pen, Free returns, shop now",  # a third phrase
    "Pentel Gel Pen, A Black Ink",  # an article opening a clause outside a phrase
])
def test_corrupted_invented_and_looping_words_are_refused(tok, grounding, text):
    assert walk(tok, grounding, text)[0] is False


@pytest.mark.parametrize("text", ["Pentel Gel Pen for", "Pentel Gel Pen,", "Pentel Ge", "Pentel",
                                  "Pentel Gel Pen, shop",
                                  "Pentel Gel Pen for office"])  # phrases end whole
def test_a_title_cannot_end_mid_word_after_a_connector_or_a_comma(tok, grounding, text):
    ok, may_end = walk(tok, grounding, text)
    assert ok and not may_end


def test_a_number_is_copied_with_what_it_measures(tok):
    g = grounding_for(TokenTable(tok), ["Gel Pen", "Ships within 24 hours", "Rated 4.7 out of 5"],
                      (), ())
    assert walk(tok, g, "Rated 4.7 out of 5") == (True, True)
    assert walk(tok, g, "Ships within 24 hours") == (True, True)
    assert walk(tok, g, "Rated 4.7, 24 hours")[0] is False
    assert walk(tok, g, "Ships within 24 hours, 4.7 out of 5")[0] is False  # "Rated 4.7"
    assert walk(tok, g, "Ships within 24") == (True, False)  # not without its unit
    g = grounding_for(TokenTable(tok), ["Rated to 20°F", "Black Ink"], (), ())
    assert walk(tok, g, "Rated to 20°F, Black Ink") == (True, True)  # a clause ends it
    g = grounding_for(TokenTable(tok), ["Soft Brush", "Brush 16,000 DPI"], (), ())
    assert walk(tok, g, "Brush 16,000 DPI") == (True, True)  # a comma inside a number
    assert walk(tok, g, "Brush 16,") == (True, False)


def test_a_copy_of_the_original_title_may_not_end(tok):
    g = grounding_for(TokenTable(tok), ["Pentel Gel Pen, Black Ink", "Quick-drying ink"], (), ())
    assert walk(tok, g, "Pentel Gel Pen, Black Ink") == (True, False)  # it adds nothing
    assert walk(tok, g, "Pentel Gel Pen, Black Ink, Quick-drying") == (True, True)


def test_a_dead_end_is_told_apart_from_a_real_end(tok):
    g = grounding_for(TokenTable(tok), ["Gel Pen for"], (), ())
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert g.ends_cleanly(ids("Gel Pen"))
    # after "Gel Pen for" every word is used up: only the end token is left, and that end is
    # the fallback, not a choice ("… for" is cut off)
    assert g.allowed(ids("Gel Pen for ")) == [tok.eos_token_id]
    assert not g.ends_cleanly(ids("Gel Pen for "))
    assert not g.ends_cleanly(ids("Gel Pen for"))  # not a dead end yet, but no end either
    assert not g.ends_cleanly(ids("Gel"))  # one word: no title yet


def test_a_plan_binds_the_end_and_the_clause_after_a_separator(tok):
    """Lexically constrained decoding: no end before the plan's claims are in the title; a
    clause opened by `,` or ` -` while a claim is missing is that claim, word for word."""
    plan = ["Quick-drying ink for smooth writing"]
    g = grounding_for(TokenTable(tok), AD, PHRASES, STOPWORDS, plan)
    assert walk(tok, g, "Pentel Gel Pen Black Ink") == (True, False)  # the claim is missing
    assert walk(tok, g, "Pentel Gel Pen, Black Ink")[0] is False  # after `,`: the claim
    assert walk(tok, g, "Pentel Gel Pen, Quick-drying ink for smooth writing") == (True, True)
    assert walk(tok, g, "Pentel Gel Pen - Quick-drying ink for smooth writing") == (True, True)
    assert walk(tok, g, "Pentel Gel Pen, Quick-drying ink for smooth") == (True, False)
    assert walk(tok, g, "Pentel Gel Pen, Quick-drying Black Ink")[0] is False  # word for word
    # the model chooses the form: a framing first (`:` is no claim opener), the claim later,
    # and once the claim is in, it may add more
    assert walk(tok, g, "For office workers: Pentel Gel Pen, Quick-drying ink for smooth "
                        "writing") == (True, True)
    assert walk(tok, g, "Pentel Gel Pen, Quick-drying ink for smooth writing, 12-Pack"
                ) == (True, True)
    # a claim in the title's own words counts, wherever it stands (content words)
    assert walk(tok, g, "Quick-drying ink for smooth writing Gel Pen") == (True, True)
    # the plan's words may be used beyond a source's count inside the claim: the original
    # title's "Ink" and the claim's "ink"
    assert walk(tok, g, "Black Ink Gel Pen, Quick-drying ink for smooth writing") == (True, True)
    # without a plan, the same decoder as before
    free = grounding_for(TokenTable(tok), AD, PHRASES, STOPWORDS)
    assert walk(tok, free, "Pentel Gel Pen, Black Ink") == (True, True)
    # a claim with a word the sources lack is left out (it could not be copied)
    assert not grounding_for(TokenTable(tok), AD, PHRASES, STOPWORDS, ["Free gift"]).plan


def test_framings_that_do_not_fit_the_ad_are_left_out(tok):
    g = grounding_for(TokenTable(tok), AD, PHRASES, STOPWORDS, phrases_off=("for office workers",))
    assert walk(tok, g, "For office workers: Pentel Gel Pen")[0] is False
    assert walk(tok, g, "Pentel Gel Pen, Free returns") == (True, True)


def test_word_sets_and_limits():
    assert {"0.7mm", "12-Pack", "BL77-A", "Ink", "ink"} <= source_words(AD)
    assert "24" not in source_words(list(PHRASES), numbers=False)
    assert word_limits(["Gel Pen Gel Ink", "Gel"]) == {"gel": 2, "pen": 1, "ink": 1}


def test_the_hf_processor_masks_each_row_to_its_own_words(tok, grounding):
    other = grounding_for(TokenTable(tok), ["Brother HL-3170CDW printer"], PHRASES, STOPWORDS)
    proc = GroundedLogitsProcessor([grounding, other])
    scores = proc(torch.zeros((2, 0), dtype=torch.long), torch.zeros(2, len(tok)))
    first = set(torch.isfinite(scores[0]).nonzero().flatten().tolist())
    second = set(torch.isfinite(scores[1]).nonzero().flatten().tolist())
    assert first == set(grounding.allowed([])) and second == set(other.allowed([]))
    assert first != second


@pytest.mark.parametrize("title, reasons", [
    ("Pentel Gel Pen, Black Ink", []),
    ("For readers for a a a", ["repeated_word", "repeated_ngram", "cut_off_ending"]),
    ("Avery 1 x 11 x 11 x 11", ["repeated_ngram"]),
    ("Pins, Clear, Made in the", ["cut_off_ending"]),
    ("Black Ink,", ["cut_off_ending"]),
    ("", ["empty_title"]),
])
def test_degenerate_reasons(title, reasons):
    from jobs.stages.badcase_rules import degenerate_reasons

    assert degenerate_reasons(title) == reasons
