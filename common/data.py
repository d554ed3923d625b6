"""Loaders for JSON-lines review and item files (plain or gzip) with per-record validation."""

from __future__ import annotations

import gzip
import html
import json
import logging
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.schema import Item, Review

logger = logging.getLogger(__name__)

BAD_RECORD_POLICIES = ("fail", "skip")
_GZIP_MAGIC = b"\x1f\x8b"
_MISSING: Any = object()
_SHOWN_IN_WARNING = 3
MAX_TEXT_CHARS = 100_000  # a review or summary longer than this is a bad record (no review is; the NLP would refuse it)
_MAX_VALUE_CHARS = 80

# Logical field -> accepted keys: normalised name first, then the raw Amazon 2014/2018 name.
_REVIEW_KEYS = {
    "user_id": ("user_id", "reviewerID"),
    "item_id": ("item_id", "asin"),
    "rating": ("rating", "overall"),
    "timestamp": ("timestamp", "unixReviewTime"),
    "summary": ("summary",),
    "text": ("review_text", "reviewText"),
    "reviewer_name": ("reviewer_name", "reviewerName"),
}
_ITEM_KEYS = {
    "item_id": ("item_id", "asin"),
    "title": ("title",),
    "categories": ("category", "categories"),
    "price": ("price",),
    "brand": ("brand",),
    "description": ("description",),
}
_INT_RE = re.compile(r"-?[0-9]+")
_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?")
_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


class DataError(ValueError):
    """A data file is missing, unreadable, or holds bad records under on_bad='fail'."""

    def __init__(self, message: str, report: LoadReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What a loader read from one file, and one problem line per bad record."""

    path: str
    lines_read: int = 0
    records_ok: int = 0
    problems: list[str] = field(default_factory=list)
    private: bool = False  # a review file: problems describe a value's type and size, never the value

    @property
    def records_bad(self) -> int:
        """Number of bad records (each bad record yields exactly one problem)."""
        return len(self.problems)

    def _add(self, line: int, field_name: str, what: str, value: Any) -> None:
        if self.private:  # raw, not yet anonymised text: it must not reach any log or console
            shown = _describe(value)
        else:
            shown = repr(value)
            if len(shown) > _MAX_VALUE_CHARS:
                shown = shown[: _MAX_VALUE_CHARS - 3] + "..."
        self.problems.append(f"{self.path}:{line}: field '{field_name}': {what}, got {shown}")


def _describe(value: Any) -> str:
    """A value's kind and size, without its content."""
    if value is None:
        return "nothing"
    if isinstance(value, (str, bytes)):
        return f"a text of {len(value)} characters"
    if isinstance(value, list):
        return f"a list of {len(value)} entries"
    if isinstance(value, dict):
        return f"a JSON object of {len(value)} entries"
    if isinstance(value, bool):
        return "true or false"
    return "a number" if isinstance(value, (int, float)) else f"a {type(value).__name__}"


@dataclass
class ReviewData:
    """Validated reviews whose items all exist in ``items``."""

    reviews: list[Review]
    items: dict[str, Item]
    review_report: LoadReport | None = None
    item_report: LoadReport | None = None


class _Bad(Exception):
    """One field of one record is invalid."""

    def __init__(self, field_name: str, what: str, value: Any) -> None:
        super().__init__(what)
        self.field_name, self.what, self.value = field_name, what, value


def _check_policy(on_bad: str) -> None:
    if on_bad not in BAD_RECORD_POLICIES:
        allowed = ", ".join(repr(p) for p in BAD_RECORD_POLICIES)
        raise ValueError(f"on_bad must be one of {allowed}, got {on_bad!r}")


def _apply_policy(report: LoadReport, on_bad: str) -> None:
    if not report.problems:
        return
    if on_bad == "fail":
        message = (
            f"{report.problems[0]} (to skip bad records instead: `--on-bad skip`, or the run setting "
            "`on-bad-record = 'skip'`)"
        )
        more = len(report.problems) - 1
        if more:
            message += f"; {more} more bad record{'s' if more > 1 else ''} in {report.path}"
        raise DataError(message, report)
    logger.warning(
        "%s: skipped %d bad record(s), kept %d; first: %s",
        report.path,
        report.records_bad,
        report.records_ok,
        " | ".join(report.problems[:_SHOWN_IN_WARNING]),
    )


def _read_lines(path: Path, kind: str) -> Iterator[tuple[int, bytes]]:
    if not path.exists():
        raise DataError(f"{path}: file not found; pass the path of a JSON-lines {kind} file")
    is_gzip = False
    try:
        with path.open("rb") as raw:
            is_gzip = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
            yield from enumerate(stream, start=1)
    except (OSError, EOFError, zlib.error) as exc:
        what = "gzip file is corrupt or truncated" if is_gzip else "cannot read file"
        raise DataError(f"{path}: {what} ({exc})") from exc


def _json_records(path: Path, kind: str, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in _read_lines(path, kind):
        report.lines_read = number
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            report._add(number, "<json>", f"not valid UTF-8 ({exc.reason})", raw.strip())
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            report._add(number, "<json>", f"invalid JSON ({exc.msg} at column {exc.colno})", text.strip())
            continue
        if not isinstance(record, dict):
            report._add(number, "<json>", "expected a JSON object", record)
            continue
        yield number, record


def _get(record: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        if key in record:
            return key, record[key]
    return keys[0], _MISSING


def _require(record: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    key, value = _get(record, keys)
    if value is _MISSING:
        also = f" (also accepted: {', '.join(repr(k) for k in keys[1:])})" if len(keys) > 1 else ""
        raise _Bad(keys[0], f"required but missing{also}", None)
    return key, value


def _required_id(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    key, value = _require(record, keys)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _Bad(key, "must be a non-empty string", value)
    return value.strip()


def _rating(record: dict[str, Any]) -> float:
    keys = _REVIEW_KEYS["rating"]
    key, value = _require(record, keys)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(key, "must be a number", value)
    if not math.isfinite(value) or not 1 <= value <= 5:
        raise _Bad(key, "must be a finite number in [1, 5]", value)
    return float(value)


def _timestamp(record: dict[str, Any]) -> int:
    keys = _REVIEW_KEYS["timestamp"]
    key, value = _require(record, keys)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise _Bad(key, "must be an integer (unix seconds)", value)
    if number < 0:
        raise _Bad(key, "must be >= 0", value)
    return number


def _optional_str(record: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    key, value = _get(record, keys)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(key, "must be a string or null", value)
    return value


def _review(record: dict[str, Any]) -> Review:
    for field_name in ("text", "summary"):
        key, value = _get(record, _REVIEW_KEYS[field_name])
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise _Bad(key, f"is {len(value):,} characters long, above the limit of {MAX_TEXT_CHARS:,}", value)
    return Review(
        user_id=_required_id(record, _REVIEW_KEYS["user_id"]),
        item_id=_required_id(record, _REVIEW_KEYS["item_id"]),
        rating=_rating(record),
        timestamp=_timestamp(record),
        summary=_optional_str(record, _REVIEW_KEYS["summary"]) or "",
        text=_optional_str(record, _REVIEW_KEYS["text"]) or "",
        reviewer_name=_optional_str(record, _REVIEW_KEYS["reviewer_name"]),
    )


def _categories(record: dict[str, Any]) -> tuple[str, ...]:
    key, value = _get(record, _ITEM_KEYS["categories"])
    found: dict[str, None] = {}  # ordered set

    def walk(node: Any) -> None:
        if isinstance(node, str):
            name = html.unescape(node).strip()
            if name:
                found.setdefault(name, None)
        elif isinstance(node, list):
            for child in node:
                walk(child)
        else:
            raise _Bad(key, "must be a string or a (nested) list of strings", value)

    if value is not _MISSING and value is not None:
        walk(value)
    return tuple(found)


def _description(record: dict[str, Any]) -> str | None:
    key, value = _get(record, _ITEM_KEYS["description"])
    if value is _MISSING or value is None:
        return None
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        value = " ".join(part.strip() for part in value if part.strip())
    if not isinstance(value, str):
        raise _Bad(key, "must be a string or a list of strings", value)
    return html.unescape(value).strip() or None


def _price(record: dict[str, Any]) -> float | None:
    key, value = _get(record, _ITEM_KEYS["price"])
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(key, "must be a number or a price string like '$7.09'", value)
    if isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        text = text.lstrip("-").strip().removeprefix("$").strip()
        if _THOUSANDS_RE.fullmatch(text):
            text = text.replace(",", "")
        if not _DECIMAL_RE.fullmatch(text):
            return None  # unparseable ("", "$7.09 - $9.99", "N/A"): unknown price, not an error
        number = -float(text) if negative else float(text)
    else:
        number = float(value)
    if not math.isfinite(number):
        return None
    if number < 0:
        raise _Bad(key, "must not be negative", value)
    return number


def _item(record: dict[str, Any]) -> Item:
    item_id = _required_id(record, _ITEM_KEYS["item_id"])
    title = html.unescape(_required_id(record, _ITEM_KEYS["title"])).strip()
    if not title:
        raise _Bad("title", "must be a non-empty string", record.get("title"))
    brand = _optional_str(record, _ITEM_KEYS["brand"])
    if brand is not None:
        brand = html.unescape(brand).strip() or None
    return Item(
        item_id=item_id,
        title=title,
        categories=_categories(record),
        price=_price(record),
        brand=brand,
        description=_description(record),
    )


def _read_reviews(
    path: Path, items: dict[str, Item] | None = None, items_path: str | Path = ""
) -> tuple[list[Review], LoadReport]:
    report = LoadReport(path=str(path), private=True)
    reviews: list[Review] = []
    for number, record in _json_records(path, "review", report):
        try:
            review = _review(record)
            if items is not None and review.item_id not in items:
                key = _get(record, _REVIEW_KEYS["item_id"])[0]
                raise _Bad(key, f"unknown item (not in {items_path})", review.item_id)
        except _Bad as bad:
            report._add(number, bad.field_name, bad.what, bad.value)
            continue
        reviews.append(review)
    report.records_ok = len(reviews)
    return reviews, report


def load_reviews(path: str | Path, *, on_bad: str = "fail") -> tuple[list[Review], LoadReport]:
    """Load reviews (normalised or raw Amazon field names) from a JSON-lines file, plain or gzip."""
    _check_policy(on_bad)
    reviews, report = _read_reviews(Path(path))
    _apply_policy(report, on_bad)
    _check_reviews(reviews, report)
    return reviews, report


def _check_reviews(reviews: list[Review], report: LoadReport) -> None:
    """No reviews at all is an error; a user reviewing one item twice is said (the latest counts)."""
    if not reviews:
        skipped = f" after skipping {report.records_bad} bad record(s)" if report.records_bad else ""
        raise DataError(f"{report.path}: no reviews{skipped}; give a JSON-lines file with one review per line", report)
    pairs = len({(r.user_id, r.item_id) for r in reviews})
    if pairs < len(reviews):
        logger.warning(
            "%s: %d review(s) repeat a (user, item) pair; each user keeps their latest review of an item",
            report.path,
            len(reviews) - pairs,
        )


def load_items(path: str | Path, *, on_bad: str = "fail") -> tuple[dict[str, Item], LoadReport]:
    """Load item metadata (normalised or raw Amazon field names) keyed by item id."""
    _check_policy(on_bad)
    path = Path(path)
    report = LoadReport(path=str(path))
    items: dict[str, Item] = {}
    first_line: dict[str, int] = {}
    for number, record in _json_records(path, "item metadata", report):
        try:
            item = _item(record)
            if item.item_id in items:
                key = _get(record, _ITEM_KEYS["item_id"])[0]
                raise _Bad(key, f"duplicate item id (first seen on line {first_line[item.item_id]})", item.item_id)
        except _Bad as bad:
            report._add(number, bad.field_name, bad.what, bad.value)
            continue
        items[item.item_id] = item
        first_line[item.item_id] = number
    report.records_ok = len(items)
    _apply_policy(report, on_bad)
    return items, report


def load_dataset(reviews_path: str | Path, items_path: str | Path, *, on_bad: str = "fail") -> ReviewData:
    """Load items and reviews; reviews of items missing from the item file are bad records."""
    _check_policy(on_bad)
    items, item_report = load_items(items_path, on_bad=on_bad)
    reviews, report = _read_reviews(Path(reviews_path), items, items_path)
    _apply_policy(report, on_bad)
    _check_reviews(reviews, report)
    return ReviewData(reviews=reviews, items=items, review_report=report, item_report=item_report)


def write_reviews(path: Path, reviews: Iterable[Review]) -> None:
    """Reviews as gzipped JSON lines in the normalised schema (the data loader's own format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for r in reviews:
            handle.write(
                json.dumps(
                    {
                        "user_id": r.user_id,
                        "item_id": r.item_id,
                        "rating": r.rating,
                        "timestamp": r.timestamp,
                        "summary": r.summary,
                        "review_text": r.text,
                        "reviewer_name": r.reviewer_name,
                    }
                )
                + "\n"
            )
