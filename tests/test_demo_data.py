"""Tests of the shipped synthetic demo data, its generator, and (if present) the real Amazon data."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from common.data import ReviewData, load_dataset
from common.split import leave_last_out

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "common" / "demo_data"
SCRIPT = REPO / "scripts" / "make_demo_data.py"
AMAZON = REPO.parent / "shared" / "data" / "amazon-musical-instruments-2014"

PII_PATTERNS = {
    "PERSON": r"\b(?:teacher|bandmate) [A-Z][a-z]+ [A-Z][a-z]+\b",
    "LOCATION": r"\b(?:Denver|Portland|Austin|Chicago|Boston|Seattle|Nashville|Toronto)\b",
    "EMAIL": r"\b[\w.]+@example\.(?:com|org)\b",
    "PHONE_PARENS": r"\(\d{3}\) \d{3}-\d{4}",
    "PHONE_INTL": r"\+1 \d{3} \d{3} \d{4}",
    "URL": r"https?://\S+",
    "CREDIT_CARD": r"\b4111 1111 1111 1111\b",
    "IBAN": r"\b[A-Z]{2}\d{2}(?: [A-Z0-9]{4}){3,}(?: [A-Z0-9]{1,4})?",
    "IP_ADDRESS": r"\b(?!2\.0\.1\.4\b)(?:\d{1,3}\.){3}\d{1,3}\b",
    "US_SSN": r"\b\d{3}-\d{2}-\d{4}\b",
    "STREET_ADDRESS": r"\b\d+ [A-Z][a-z]+ (?:Street|Avenue|Lane|Road)\b",
}
HARD_NEGATIVES = ["Dr Pepper", "2.0.1.4", "$19.99", "SM-58"]


@pytest.fixture(scope="module")
def demo() -> ReviewData:
    """The shipped demo data, loaded strictly."""
    return load_dataset(DEMO / "reviews.jsonl", DEMO / "items.jsonl", on_bad="fail")


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the generator in a fresh interpreter."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True,
                          timeout=60)


def test_when_demo_data_loaded_strictly_then_clean_and_big_enough(demo: ReviewData) -> None:
    users = {r.user_id for r in demo.reviews}
    assert len(users) >= 200 and len(demo.items) >= 100
    assert demo.review_report is not None and demo.review_report.problems == []
    assert all(re.fullmatch(r"U\d{4}", u) for u in users) and all(re.fullmatch(r"D\d{4}", i) for i in demo.items)
    assert all(item.categories and item.brand and item.price for item in demo.items.values())


def test_when_demo_files_checked_then_they_fit_a_flower_app_bundle() -> None:
    from flwr.supercore.constant import MAX_FILE_BYTES

    sizes = [path.stat().st_size for path in DEMO.glob("*.jsonl")]
    assert len(sizes) == 2 and max(sizes) < MAX_FILE_BYTES and (DEMO / "README.md").exists()
    assert not list(DEMO.glob("*.gz"))  # Flower app bundles never carry *.gz files


def test_when_demo_reviews_checked_then_texts_have_15_to_60_words_and_names(demo: ReviewData) -> None:
    assert all(15 <= len(r.text.split()) <= 60 for r in demo.reviews)
    names = {}
    for r in demo.reviews:
        assert r.reviewer_name and names.setdefault(r.user_id, r.reviewer_name) == r.reviewer_name
        assert r.summary and 1 <= r.rating <= 5


def test_when_demo_split_then_test_item_category_predictable(demo: ReviewData) -> None:
    split = leave_last_out(demo.reviews)
    assert len(split.test) >= 200
    hits = 0
    for user, held_out in split.test.items():
        counts = Counter(demo.items[r.item_id].categories[0] for r in split.train[user])
        top = [name for name, _ in counts.most_common(2)]
        hits += demo.items[held_out.item_id].categories[0] in top
    assert hits / len(split.test) > 0.6


def test_when_demo_texts_scanned_then_every_pii_kind_and_hard_negative_present(demo: ReviewData) -> None:
    texts = [r.text for r in demo.reviews]
    for kind, pattern in PII_PATTERNS.items():
        assert any(re.search(pattern, text) for text in texts), kind
    own_name = [r for r in demo.reviews
                if r.reviewer_name and re.search(rf"\b{re.escape(r.reviewer_name.split()[0])}\b", r.text)]
    assert own_name, "OWN_NAME"
    for negative in HARD_NEGATIVES:
        assert any(negative in text for text in texts), negative
    with_pii = sum(any(re.search(p, t) for p in PII_PATTERNS.values()) for t in texts) + len(own_name)
    assert 0.15 < with_pii / len(texts) < 0.35


def test_when_script_run_twice_then_bytes_identical_and_match_shipped_files(tmp_path: Path) -> None:
    run_script("--out", str(tmp_path / "a"))
    run_script("--out", str(tmp_path / "b"), "--seed", "0")
    for name in ("reviews.jsonl", "items.jsonl"):
        produced = (tmp_path / "a" / name).read_bytes()
        assert produced == (tmp_path / "b" / name).read_bytes(), name
        assert produced == (DEMO / name).read_bytes(), f"{name} is stale: rerun scripts/make_demo_data.py"


def test_when_script_given_other_seed_and_sizes_then_different_valid_data(tmp_path: Path) -> None:
    run_script("--out", str(tmp_path), "--seed", "7", "--users", "30", "--items", "40")
    data = load_dataset(tmp_path / "reviews.jsonl", tmp_path / "items.jsonl")
    assert len({r.user_id for r in data.reviews}) == 30 and len(data.items) == 40
    assert (tmp_path / "items.jsonl").read_bytes() != (DEMO / "items.jsonl").read_bytes()


def test_when_script_asked_for_help_then_usage_shown() -> None:
    assert "--seed" in run_script("--help").stdout


def test_when_script_given_too_few_items_then_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--items", "5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--items must be >= 20" in result.stderr


@pytest.mark.skipif(not AMAZON.exists(), reason=f"{AMAZON} not present")
def test_when_amazon_2014_loaded_strictly_then_known_counts() -> None:
    data = load_dataset(AMAZON / "reviews.jsonl.gz", AMAZON / "items.jsonl", on_bad="fail")
    assert len(data.reviews) == 10_261 and len(data.items) == 900
    assert len({r.user_id for r in data.reviews}) == 1_429
    split = leave_last_out(data.reviews)
    assert len(split.test) == 1_429 and len(split.valid) == 1_429 and len(split.users()) == 1_429
