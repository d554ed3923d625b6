"""The PII scrubber: the labelled benchmark, each entity type, own names, hard negatives, offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from client.anonymiser import PiiScrubber
from client.anonymiser.own_names import own_name_terms
from client.anonymiser.scoring import load_labelled, score
from common.data import load_items

from tests.conftest import SHARED_DATA

PII_DIR = Path(__file__).parent / "data" / "pii"


@pytest.fixture(scope="module")
def catalogue_scrubber():
    """The scrubber as a client on the real musical-instruments catalogue runs it."""
    items_file = SHARED_DATA / "items.jsonl"
    if not items_file.is_file():
        pytest.skip(f"{items_file} is not here")
    items, _ = load_items(items_file)
    return PiiScrubber.for_catalogue(items.values())


@pytest.mark.parametrize("name", ["eval", "test"])
def test_when_labelled_set_scrubbed_then_recall_and_precision_meet_targets(catalogue_scrubber, name):
    path = PII_DIR / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    rows = load_labelled(path)
    assert len(rows) >= 150
    result = score(catalogue_scrubber, rows)
    assert len(result.gold) == 10  # every entity type is in the set
    assert result.recall() >= 0.97, result.missed
    assert result.precision() >= 0.90, result.spurious


@pytest.mark.parametrize("text, token, value", [
    ("Email me at jo.tanner@example.com about it.", "<EMAIL_ADDRESS>", "jo.tanner@example.com"),
    ("Call (615) 555-0142 after six.", "<PHONE_NUMBER>", "555-0142"),
    ("Specs are at https://gear.example.org/specs.", "<URL>", "gear.example.org"),
    ("Card 4111 1111 1111 1111 was charged twice.", "<CREDIT_CARD>", "4111 1111"),
    ("Refund to GB82 WEST 1234 5698 7654 32 please.", "<IBAN_CODE>", "GB82"),
    ("The mixer sits at 192.168.1.23 on my network.", "<IP_ADDRESS>", "192.168"),
    ("They asked for my SSN 536-22-8726 on the warranty form.", "<US_SSN>", "536-22"),
    ("Ship it to 1428 Elm Street, Apt 4 please.", "<STREET_ADDRESS>", "Elm Street"),
    ("My teacher Sarah Jenkins loves it.", "<PERSON>", "Jenkins"),
    ("It arrived in Nashville two days early.", "<LOCATION>", "Nashville"),
])
def test_when_entity_present_then_replaced_by_its_type_and_gone(scrubber, text, token, value):
    result = scrubber.scrub(text)
    assert token in result.text
    assert value not in result.text  # the original is gone, not merely tagged beside it
    assert sum(result.counts.values()) >= 1


@pytest.mark.parametrize("text", [
    "Dr Pepper spilled on my Boss DD-7 and it still works.",
    "After firmware 2.0.1.4 the looper stopped dropping beats.",
    "Paid $129.99 for the Shure SM58, model number B-0042-55.",
    "My Gibson Les Paul stays in tune with Ernie Ball strings.",
])
def test_when_hard_negative_then_text_unchanged(scrubber, text):
    assert scrubber.scrub(text).text == text


def test_when_user_known_then_own_name_and_first_name_removed(scrubber):
    text = "Thanks, Mike! Mike Turner here; my handle guitarmike77 is on the forum."
    result = scrubber.scrub(text, own_names=["Mike Turner", "guitarmike77"])
    for value in ("Mike", "Turner", "guitarmike77"):
        assert value not in result.text
    assert result.counts["OWN_NAME"] >= 3


def test_when_display_name_generic_then_its_words_stay_elsewhere():
    assert own_name_terms(["Amazon Customer"]) == ["Amazon Customer"]
    assert "Smith" in own_name_terms(['A. Smith "guitar guy"'])


def test_when_no_nlp_model_then_pattern_only_and_said_loudly(caplog):
    scrubber = PiiScrubber(model="none")
    assert scrubber.mode == "pattern-only"
    assert "PATTERN-ONLY" in caplog.text
    result = scrubber.scrub("Sarah Jenkins at sarah@example.com")
    assert "<EMAIL_ADDRESS>" in result.text and "Sarah" in result.text  # names need a model


def test_when_model_missing_then_one_line_error():
    from client.anonymiser import AnonymiserError

    with pytest.raises(AnonymiserError, match="neither an installed spaCy package"):
        PiiScrubber(model="xx_no_such_pipeline")


def test_when_scrubbing_then_no_network_is_touched(scrubber, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the scrubber tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert "<EMAIL_ADDRESS>" in scrubber.scrub("write to ann@shop.co.uk or ann@music.example").text


def test_when_batch_scrubbed_then_same_as_one_by_one(scrubber):
    texts = ["Call Dave at 615-555-0101.", "Nothing here.", "Sent from Denver by Ana."]
    names = [["Dave Ross"], [], []]
    batch = [r.text for r in scrubber.scrub_many(texts, names)]
    assert batch == [scrubber.scrub(t, own_names=n).text for t, n in zip(texts, names)]
