"""Text nobody here wrote (issue 17): HTML entities and tags, accents, lower-case own names,
possessives, dash signatures, handles, and the counts ``client inspect`` shows of them."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.anonymiser import PiiScrubber, ScrubResult
from client.anonymiser.gazetteer import place_names
from client.anonymiser.normalise import fold, normalise
from client.anonymiser.own_names import checkable, count_own_names, own_name_terms
from client.anonymiser.vocabulary import product_words
from client.prepare import anonymise_reviews, build_metadata, own_name_counts
from common.schema import Item, Review

ZOE = ["Zoë Brontë"]
CATALOGUE = [
    Item("i1", "Fender Player Stratocaster Electric Guitar", brand="Fender"),
    Item("i2", "Gibson Les Paul Standard", brand="Gibson"),
    Item("i3", "Ernie Ball Regular Slinky Nickel Wound Strings", brand="Ernie Ball"),
    Item("i4", "D&#39;Addario EXL110 Electric Guitar Strings", brand="D'Addario"),
    Item("i5", "Shure SM58 Cardioid Dynamic Vocal Microphone", brand="Shure"),
    Item("i6", "Boss TU-3 Chromatic Tuner Pedal", brand="Boss"),
    Item("i7", "Martin D-28 Acoustic Guitar and Martin Strings", brand="Martin"),
]


@pytest.fixture(scope="module")
def patterns() -> PiiScrubber:
    """Pattern-only: a name in the output can only have been removed by the own-name matcher."""
    return PiiScrubber(model="none")


@pytest.fixture(scope="module")
def ner() -> PiiScrubber:
    """The full scrubber with a catalogue holding the brands of the hard negatives."""
    return PiiScrubber.for_catalogue(CATALOGUE)


# --- normalise and fold -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("212&#45;555&#45;0147", "212-555-0147"),
        ("212&#x2D;555&amp;#45;0147", "212-555-0147"),  # hex, and encoded twice
        ("Zo&euml; said &quot;great&quot; &amp; left", 'Zoë said "great" & left'),
        ("AT&T and ?a=1&notes=2 and &M; stay", "AT&T and ?a=1&notes=2 and &M; stay"),
        ("Great strings!<br />Zoe<BR>", "Great strings! Zoe "),
        ('<a href="mailto:zoe@example.com">mail</a> me', " mail  me"),
        ("I <3 it <<< -> Photos <- &lt;$20", "I <3 it <<< -> Photos <- <$20"),
        ("<PERSON> and <EMAIL_ADDRESS> stay", "<PERSON> and <EMAIL_ADDRESS> stay"),
        ("２１２–５５５ and Zo\u200bë and a\u00a0b", "212–555 and Zoë and a b"),
    ],
)
def test_when_text_normalised_then_entities_decoded_tags_dropped_nfkc_applied(raw, expected):
    assert normalise(raw) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.characters(codec="utf-8") | st.sampled_from(["&amp;", "&#45;", "<br>", "&lt;b&gt;", "e\u0301"])).map(
        "".join
    )
)
def test_when_normalised_twice_then_unchanged_and_fold_keeps_every_offset(text):
    once = normalise(text)
    assert normalise(once) == once
    assert len(fold(text)) == len(text)


def test_when_folded_then_accents_and_curly_apostrophes_go_one_character_each():
    assert fold("Zoë Brontë’s café") == "Zoe Bronte's cafe"
    assert fold("straße æ") == "straße æ"  # no one-character base: kept, offsets unchanged


def test_when_place_written_without_accents_then_gazetteer_knows_it():
    names = place_names()
    assert {"sao paulo", "montreal", "zurich"} <= names


def test_when_catalogue_has_entities_and_accents_then_product_words_are_decoded_and_folded():
    words = product_words([Item("x", "D&#39;Addario Gretsch Falcón", brand="D’Addario")])
    assert {"d'addario", "gretsch", "falcon"} <= words


# --- own names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "zoe bronte here, happy with these strings",
        "ZOE BRONTE, happy customer",
        "Thanks! zoe",
        "Great strings. -- zoe",
        "Great strings.\n- Zoë",
        "Zoë's old guitar, Brontë’s new one",
        "Zo&euml; Bront&euml; loves it",
        "Zoe<br/>Bronte",
        "I post as zoebronte, ZoeBronte77, zoe_bronte and zoe.bronte on forums",
        "write zoebronte at gmail dot com",
    ],
)
def test_when_own_name_written_any_way_then_it_is_gone(patterns, text):
    result = patterns.scrub(text, own_names=ZOE)
    assert result.counts["OWN_NAME"] >= 1
    assert re.search("zoe|bronte", fold(result.text), re.IGNORECASE) is None, result.text
    assert count_own_names(result.text, ZOE) == 0


def test_when_own_name_possessive_then_only_the_name_is_replaced_and_accents_elsewhere_kept(patterns):
    result = patterns.scrub("Zoë's café guitar and Beyoncé's record", own_names=ZOE)
    assert result.text == "<PERSON>'s café guitar and Beyoncé's record"


def test_when_own_name_is_an_email_local_part_then_one_email_is_replaced(patterns):
    result = patterns.scrub("mail zoebronte@example.com or zoe.bronte@example.org", own_names=ZOE)
    assert result.text == "mail <EMAIL_ADDRESS> or <EMAIL_ADDRESS>"
    assert result.counts == Counter({"EMAIL_ADDRESS": 2})


def test_when_display_name_generic_then_its_words_stay_and_it_is_unchecked(patterns):
    text = "The customer service at amazon was great, music to my ears."
    assert patterns.scrub(text, own_names=["Amazon Customer"]).text == text
    assert patterns.scrub("Bought it at a shop near me.", own_names=["AT", "Me"]).text == "Bought it at a shop near me."
    assert own_name_terms(["Amazon Customer"]) == ["Amazon Customer"]
    assert not checkable(["Amazon Customer"]) and not checkable(["AT"]) and not checkable(["J"]) and checkable(ZOE)


def test_when_short_initials_then_no_handle_that_matches_everywhere():
    assert count_own_names("a b, ab and abba", ["A B"]) == 1  # the whole "a b" only


# --- HTML in reviews through the scrubber -----------------------------------------------------


def test_when_phone_written_as_entities_then_caught_and_text_stored_decoded(patterns):
    result = patterns.scrub("Call 212&#45;555&#45;0147 &amp; ask for &quot;the tech&quot;.")
    assert result.text == 'Call <PHONE_NUMBER> & ask for "the tech".'
    assert result.counts["PHONE_NUMBER"] == 1


def test_when_email_hidden_in_a_tag_then_no_address_is_left(patterns):
    result = patterns.scrub('Ask <a href="mailto:zoe@example.com">me</a>, or <b>zoe@example.com</b>.')
    assert "example" not in result.text and "<a" not in result.text and "<b>" not in result.text
    assert "<EMAIL_ADDRESS>" in result.text


def test_when_batch_scrubbed_then_same_normalised_text_as_one_by_one(ner):
    texts = ["Call 212&#45;555&#45;0147.<br />-- zoe", "D&#39;Addario strings, thanks Mike"]
    names = [ZOE, ["Mike Turner"]]
    batch = [r.text for r in ner.scrub_many(texts, names)]
    assert batch == [ner.scrub(t, own_names=n).text for t, n in zip(texts, names, strict=True)]
    assert batch == ["Call <PHONE_NUMBER>. -- <PERSON>", "D'Addario strings, thanks <PERSON>"]


# --- the full scrubber: signatures of strangers, brands that must survive -----------------------


@pytest.mark.parametrize("text", ["Great strings. -- mike", "Great strings.<br />- Mike", "Works fine - Gwen"])
def test_when_a_stranger_signs_after_a_dash_then_the_name_is_gone(ner, text):
    result = ner.scrub(text)
    assert result.text.endswith("<PERSON>") and result.counts["PERSON"] == 1
    assert "<br" not in result.text


@pytest.mark.parametrize(
    "text",
    [
        "My Fender Stratocaster and Gibson Les Paul stay in tune with Ernie Ball strings.",
        "I switched to D'Addario EXL110 and D’Addario strings last year.",
        "The Shure SM58 and the Boss TU-3 share one power supply.",
        "The Martin D-28 is warm and Martin strings last.",
        "Fender makes great picks, and Gibson does too.",
    ],
)
def test_when_brands_in_a_product_review_then_they_survive(ner, text):
    assert ner.scrub(text, own_names=ZOE).text == text


@pytest.mark.parametrize("raw", ["D&#39;Addario strings on my Gibson", "Fender&reg; amps &amp; Shure mics"])
def test_when_brands_written_as_entities_then_they_survive_decoded(ner, raw):
    assert ner.scrub(raw).text == normalise(raw) != raw


# --- what `client inspect` reports -------------------------------------------------------------


class _MissesEverything:
    """A scrubber that finds nothing: what `inspect` says when a name slips through."""

    model_name = "fake"
    mode = "ner:fake"

    def scrub_many(self, texts, own_names):
        return [ScrubResult(normalise(t)) for t in texts]


def _reviews() -> list[Review]:
    return [
        Review("U1", "i1", 5.0, 1, "Love it", "zoe bronte here -- Zo&euml;", reviewer_name="Zoë Brontë"),
        Review("U2", "i2", 4.0, 2, "Fine", "Works. -- Jim", reviewer_name="Amazon Customer"),
    ]


def test_when_own_name_left_unaccented_then_inspect_counts_it_remaining_and_warns():
    anonymised = anonymise_reviews(_reviews(), _MissesEverything(), pseudonym_key="00" * 32, progress=False)
    assert anonymised.own_names == {
        "users-with-display-name": 2,
        "display-names-unchecked": 1,  # "Amazon Customer": nothing to look for
        "display-names-found": 2,  # "zoe bronte" and "Zo&euml;" in the text
        "display-names-remaining": 2,
    }
    meta = build_metadata(anonymised, _MissesEverything(), pseudonym_key="00" * 32, source={})
    assert any("2 occurrence(s)" in w for w in meta.warnings)
    assert "zoe" not in str(meta.public()).lower()  # counts only, never text


def test_when_scrubbed_then_inspect_counts_none_remaining(patterns):
    anonymised = anonymise_reviews(_reviews(), patterns, pseudonym_key="00" * 32, progress=False)
    assert anonymised.own_names["display-names-found"] == 2
    assert anonymised.own_names["display-names-remaining"] == 0
    assert anonymised.reviews[0].text == "<PERSON> here -- <PERSON>"


def test_when_counting_then_the_three_lists_must_line_up():
    with pytest.raises(ValueError):
        own_name_counts(["a", "b"], ["a"], [ZOE, ZOE], [set(ZOE)])
