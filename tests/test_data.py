"""Tests of the JSON-lines review and item loaders."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from common.data import DataError, LoadReport, load_dataset, load_items, load_reviews
from common.schema import Item, Review

GOOD = {"user_id": "U1", "item_id": "I1", "rating": 5.0, "timestamp": 100, "summary": "Nice",
        "review_text": "Great strings.", "helpful": [1, 2], "reviewer_name": "Ann Example"}
RAW = {"reviewerID": "A2X", "asin": "B00X", "overall": 4.0, "unixReviewTime": 1393545600,
       "reviewTime": "02 28, 2014", "summary": "ok", "reviewText": "Fine cable.", "reviewerName": "Bob",
       "helpful": [0, 0]}


def write_lines(path: Path, lines: list[Any], *, gz: bool = False) -> Path:
    """Write records (dicts are JSON-encoded, strings written verbatim) one per line."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of base with changed keys; a value of ... removes the key."""
    record = {**base, **changes}
    return {key: value for key, value in record.items() if value is not ...}


# ---------------------------------------------------------------- good reviews


def test_when_normalised_schema_then_reviews_parsed_and_extra_keys_ignored(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, with_(GOOD, user_id=7, item_id=8, review_text=None,
                                                          summary=..., reviewer_name=None, timestamp="200")])
    reviews, report = load_reviews(path)
    assert reviews == [Review("U1", "I1", 5.0, 100, "Nice", "Great strings.", "Ann Example"),
                       Review("7", "8", 5.0, 200, "", "", None)]
    assert report == LoadReport(path=str(path), lines_read=2, records_ok=2, problems=[], private=True)


def test_when_raw_amazon_schema_in_gzip_then_reviews_parsed(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "raw.json.gz", [RAW], gz=True)
    reviews, _ = load_reviews(path)
    assert reviews == [Review("A2X", "B00X", 4.0, 1393545600, "ok", "Fine cable.", "Bob")]


def test_when_gzip_without_gz_extension_then_detected_by_magic_bytes(tmp_path: Path) -> None:
    reviews, _ = load_reviews(write_lines(tmp_path / "r.jsonl", [GOOD], gz=True))
    assert len(reviews) == 1


def test_when_plain_file_named_gz_then_read_as_plain(tmp_path: Path) -> None:
    reviews, _ = load_reviews(write_lines(tmp_path / "r.jsonl.gz", [GOOD]))
    assert len(reviews) == 1


def test_when_blank_lines_then_skipped_without_problems(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", ["", GOOD, "   ", GOOD, ""])
    reviews, report = load_reviews(path)
    assert len(reviews) == 2 and report.problems == [] and report.lines_read == 5


# ---------------------------------------------------------------- bad reviews

BAD_REVIEWS = [
    ('{"user_id": "U1", ', "<json>", "invalid JSON"),
    ("[1, 2]", "<json>", "expected a JSON object, got a list of 2 entries"),
    ('"just text"', "<json>", "expected a JSON object, got a text of 9 characters"),
    (with_(GOOD, user_id=...), "user_id", "required but missing (also accepted: 'reviewerID'), got nothing"),
    (with_(GOOD, user_id=""), "user_id", "must be a non-empty string, got a text of 0 characters"),
    (with_(GOOD, item_id=None), "item_id", "must be a non-empty string, got nothing"),
    (with_(GOOD, rating="five"), "rating", "must be a number, got a text of 4 characters"),
    (with_(GOOD, rating=True), "rating", "must be a number, got true or false"),
    (with_(GOOD, rating=6), "rating", "must be a finite number in [1, 5], got a number"),
    (with_(GOOD, rating=0.5), "rating", "must be a finite number in [1, 5], got a number"),
    (json.dumps(with_(GOOD, rating=float("nan"))), "rating", "must be a finite number in [1, 5], got a number"),
    (with_(GOOD, timestamp=...), "timestamp", "required but missing"),
    (with_(GOOD, timestamp=-1), "timestamp", "must be >= 0, got a number"),
    (with_(GOOD, timestamp="-5"), "timestamp", "must be >= 0, got a text of 2 characters"),
    (with_(GOOD, timestamp="yesterday"), "timestamp", "must be an integer (unix seconds), got a text of 9 characters"),
    (with_(GOOD, timestamp=1.5), "timestamp", "must be an integer (unix seconds), got a number"),
    (with_(GOOD, summary=5), "summary", "must be a string or null, got a number"),
    (with_(GOOD, review_text=["a"]), "review_text", "must be a string or null, got a list of 1 entries"),
    (with_(GOOD, reviewer_name=7), "reviewer_name", "must be a string or null, got a number"),
    (with_(RAW, overall=0), "overall", "must be a finite number in [1, 5], got a number"),
    (with_(RAW, reviewerID=...), "user_id", "required but missing"),
    (with_(GOOD, review_text="x" * 1_000_000), "review_text",
     "is 1,000,000 characters long, above the limit of 100,000"),  # spaCy would stop the whole prepare
]


@pytest.mark.parametrize(("line", "field", "what"), BAD_REVIEWS)
def test_when_bad_review_and_fail_then_data_error_names_file_line_field(
    tmp_path: Path, line: Any, field: str, what: str
) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, line, GOOD])
    expected = f"{path}:2: field '{field}': {what}"
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        load_reviews(path)
    assert str(caught.value).endswith(" (to skip bad records instead: `--on-bad skip`, or the run setting "
                                      "`on-bad-record = 'skip'`)")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("line", "field", "what"), BAD_REVIEWS)
def test_when_bad_review_and_skip_then_counted_and_skipped(
    tmp_path: Path, line: Any, field: str, what: str
) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, line, GOOD])
    reviews, report = load_reviews(path, on_bad="skip")
    assert len(reviews) == 2 and report.records_ok == 2 and report.records_bad == 1
    assert report.problems[0].startswith(f"{path}:2: field '{field}': {what}")


def test_when_problem_then_formatted_exactly(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [with_(GOOD, rating=6), GOOD])
    _, report = load_reviews(path, on_bad="skip")
    assert report.problems == [f"{path}:1: field 'rating': must be a finite number in [1, 5], got a number"]


def test_when_bad_review_value_then_its_kind_is_shown_never_its_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [with_(GOOD, summary=["Call Quinn on 555-0147"]),
                                              with_(GOOD, user_id={"name": "Quinn Harlow"}), GOOD])
    _, report = load_reviews(path, on_bad="skip")
    assert report.problems[0].endswith("got a list of 1 entries")
    assert not any("Quinn" in p or "555" in p for p in report.problems)


def test_when_several_bad_records_and_fail_then_first_reported_with_count(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, with_(GOOD, rating=9), "nope", with_(GOOD, user_id="")])
    with pytest.raises(DataError, match=re.escape(
            f"{path}:2: field 'rating'") + r".*'skip'`\); 2 more bad records in "):
        load_reviews(path)


def test_when_skip_then_warning_logged_with_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, "nope", with_(GOOD, rating=9)])
    with caplog.at_level(logging.WARNING, logger="common.data"):
        load_reviews(path, on_bad="skip")
    assert "skipped 2 bad record(s), kept 1" in caplog.text and f"{path}:2: field '<json>'" in caplog.text


def test_when_unknown_policy_then_value_error_names_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD])
    with pytest.raises(ValueError, match=r"on_bad must be one of 'fail', 'skip', got 'ignore'"):
        load_reviews(path, on_bad="ignore")
    with pytest.raises(ValueError, match="'ignore'"):
        load_items(path, on_bad="ignore")


def test_when_review_file_missing_then_data_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(f"{path}: file not found; pass the path of a JSON-lines review file")):
        load_reviews(path)


def test_when_item_file_missing_then_data_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(f"{path}: file not found; pass the path of a JSON-lines item")):
        load_items(path)


@pytest.mark.parametrize("content", [b"\x1f\x8bthis is not gzip at all",
                                     gzip.compress(json.dumps(GOOD).encode() * 50)[:40]])
def test_when_gzip_corrupt_or_truncated_then_data_error_names_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{path}: gzip file is corrupt or truncated")):
        load_reviews(path)


def test_when_invalid_utf8_then_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe{}\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: field '<json>': not valid UTF-8")):
        load_reviews(path)


def test_when_data_error_then_it_is_a_value_error_with_report(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", ["nope"])
    with pytest.raises(ValueError) as caught:
        load_reviews(path)
    assert isinstance(caught.value, DataError) and caught.value.report.records_bad == 1


# ---------------------------------------------------------------- items

ITEM = {"item_id": "I1", "title": "Strings &amp; Things", "category": "Guitar Strings", "price": "7.09"}


def load_one_item(tmp_path: Path, record: dict[str, Any]) -> Item:
    items, _ = load_items(write_lines(tmp_path / "items.jsonl", [record]))
    return next(iter(items.values()))


def test_when_normalised_item_then_parsed_and_title_unescaped(tmp_path: Path) -> None:
    assert load_one_item(tmp_path, ITEM) == Item("I1", "Strings & Things", ("Guitar Strings",), 7.09)


def test_when_raw_2018_item_then_parsed(tmp_path: Path) -> None:
    record = {"asin": "B01", "title": "Mic", "category": ["Musical Instruments", "Microphones", "Microphones"],
              "brand": "Acme", "description": ["Great mic.", "", "Very clear."], "price": "$19.99",
              "also_buy": ["B02"]}
    assert load_one_item(tmp_path, record) == Item(
        "B01", "Mic", ("Musical Instruments", "Microphones"), 19.99, "Acme", "Great mic. Very clear.")


def test_when_raw_2014_nested_categories_then_flattened_and_deduped(tmp_path: Path) -> None:
    record = {"asin": "B01", "title": "Pick", "price": 0.99,
              "categories": [["Musical Instruments", "Guitar Accessories"], ["Musical Instruments", "Picks"]]}
    item = load_one_item(tmp_path, record)
    assert item.categories == ("Musical Instruments", "Guitar Accessories", "Picks") and item.price == 0.99


@pytest.mark.parametrize(("category", "expected"), [
    ("Pedals", ("Pedals",)), (["A", "B"], ("A", "B")), ([["A", "B"], ["A", "C"]], ("A", "B", "C")),
    ([], ()), (None, ()), (..., ()), ("Bags &amp; Cases", ("Bags & Cases",)),
])
def test_when_category_shape_varies_then_tuple_of_names(tmp_path: Path, category: Any, expected: tuple) -> None:
    assert load_one_item(tmp_path, with_(ITEM, category=category)).categories == expected


@pytest.mark.parametrize(("price", "expected"), [
    (7.09, 7.09), (3, 3.0), (0, 0.0), ("7.09", 7.09), ("$7.09", 7.09), (" $ 12 ", 12.0), ("$1,299.00", 1299.0),
    ("", None), ("N/A", None), ("$7.09 - $9.99", None), (None, None), (..., None), ("nan", None),
])
def test_when_price_given_then_parsed_or_none(tmp_path: Path, price: Any, expected: float | None) -> None:
    assert load_one_item(tmp_path, with_(ITEM, price=price)).price == expected


BAD_ITEMS = [
    (with_(ITEM, price=-1), "price", "must not be negative, got -1"),
    (with_(ITEM, price="-$2.50"), "price", "must not be negative, got '-$2.50'"),
    (with_(ITEM, price=[7]), "price", "must be a number or a price string"),
    (with_(ITEM, title=...), "title", "required but missing, got None"),
    (with_(ITEM, title="  "), "title", "must be a non-empty string"),
    (with_(ITEM, item_id=...), "item_id", "required but missing (also accepted: 'asin')"),
    (with_(ITEM, category=5), "category", "must be a string or a (nested) list of strings, got 5"),
    (with_(ITEM, category=["A", 5]), "category", "must be a string or a (nested) list of strings"),
    (with_(ITEM, description=5), "description", "must be a string or a list of strings, got 5"),
    (with_(ITEM, brand=5), "brand", "must be a string or null, got 5"),
    (with_(ITEM, item_id="I0"), "item_id", "duplicate item id (first seen on line 1), got 'I0'"),
    ("{oops", "<json>", "invalid JSON"),
]


@pytest.mark.parametrize(("line", "field", "what"), BAD_ITEMS)
def test_when_bad_item_then_fail_raises_and_skip_counts(tmp_path: Path, line: Any, field: str, what: str) -> None:
    path = write_lines(tmp_path / "items.jsonl", [with_(ITEM, item_id="I0"), line, with_(ITEM, item_id="I9")])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: field '{field}': {what}")):
        load_items(path)
    items, report = load_items(path, on_bad="skip")
    assert sorted(items) == ["I0", "I9"] and report.records_ok == 2 and report.records_bad == 1


# ---------------------------------------------------------------- dataset


def test_when_reviews_reference_unknown_items_then_bad_records(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "items.jsonl", [ITEM])
    reviews = write_lines(tmp_path / "r.jsonl.gz", [GOOD, with_(GOOD, item_id="I404"), "", GOOD], gz=True)
    with pytest.raises(DataError, match=re.escape(
            f"{reviews}:2: field 'item_id': unknown item (not in {items}), got a text of 4 characters")):
        load_dataset(reviews, items)
    data = load_dataset(reviews, items, on_bad="skip")
    assert [r.item_id for r in data.reviews] == ["I1", "I1"] and list(data.items) == ["I1"]
    assert data.review_report is not None and data.review_report.records_bad == 1


def test_when_raw_review_unknown_item_then_field_named_asin(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "items.jsonl", [ITEM])
    reviews = write_lines(tmp_path / "r.jsonl", [RAW])
    with pytest.raises(DataError, match=re.escape(f"{reviews}:1: field 'asin': unknown item")):
        load_dataset(reviews, items)


def test_when_problems_of_both_kinds_then_reported_in_line_order(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "items.jsonl", [ITEM])
    reviews = write_lines(tmp_path / "r.jsonl", [with_(GOOD, item_id="X"), "nope", with_(GOOD, item_id=ITEM["item_id"])])
    data = load_dataset(reviews, items, on_bad="skip")
    assert [p.split(": field")[0] for p in data.review_report.problems] == [f"{reviews}:1", f"{reviews}:2"]


def test_when_item_file_bad_then_dataset_fails_naming_item_file(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "items.jsonl", [with_(ITEM, title="")])
    reviews = write_lines(tmp_path / "r.jsonl", [GOOD])
    with pytest.raises(DataError, match=re.escape(f"{items}:1: field 'title'")):
        load_dataset(reviews, items)


def test_when_review_file_is_empty_or_all_bad_then_one_line_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"r.jsonl: no reviews; give a JSON-lines file"):
        load_reviews(write_lines(tmp_path / "r.jsonl", ["", "  "]))
    with pytest.raises(DataError, match=r"r2.jsonl: no reviews after skipping 2 bad record\(s\)"):
        load_reviews(write_lines(tmp_path / "r2.jsonl", ["[1]", "{"]), on_bad="skip")


def test_when_a_user_reviews_an_item_twice_then_a_warning_says_the_latest_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, with_(GOOD, timestamp=GOOD["timestamp"] + 1)])
    with caplog.at_level("WARNING"):
        reviews, _ = load_reviews(path)
    assert len(reviews) == 2
    assert "1 review(s) repeat a (user, item) pair; each user keeps their latest review of an item" in caplog.text
