"""The pure pieces of scripts/benchmark_anonymiser_independent.py (no Presidio, no presidio-evaluator)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_anonymiser_independent.py"
PII_DIR = Path(__file__).parent / "data" / "pii"


@pytest.fixture(scope="module")
def bench():
    """The script as a module (it imports Presidio only inside the functions that scrub)."""
    spec = importlib.util.spec_from_file_location("benchmark_anonymiser_independent", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("PERSON", "PERSON"),
        ("GPE", "LOCATION"),
        ("DOMAIN_NAME", "URL"),
        ("US_SSN", "US_SSN"),
        ("DATE_TIME", None),
        ("ORGANIZATION", None),
    ],
)
def test_when_label_mapped_then_privrec_type_or_none(bench, label, expected):
    # Execute / Assert
    assert bench.map_label(label) == expected


def test_when_label_unknown_then_error_names_label_and_fix(bench):
    with pytest.raises(ValueError, match=r"'HOSPITAL' is not mapped: add it to LABEL_MAP or NOT_SCORED"):
        bench.map_label("HOSPITAL")


def test_when_mapping_built_then_only_scrubber_types(bench):
    assert set(bench.LABEL_MAP.values()) <= set(bench.TYPES)
    assert not set(bench.LABEL_MAP) & bench.NOT_SCORED


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Golden values: Wilson (1927) score interval, z = 1.959964 (checked against the closed form).
    [(45, 50, 0.7864, 0.9565), (50, 50, 0.9287, 1.0), (0, 10, 0.0, 0.2775), (1, 2, 0.0945, 0.9055)],
)
def test_when_wilson_interval_then_golden_values(bench, k, n, low, high):
    lo, hi = bench.wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_when_no_trials_then_wilson_interval_is_nan(bench):
    assert all(math.isnan(x) for x in bench.wilson(0, 0))


def test_when_generated_sentence_converted_then_row_loads_in_labelled_format(bench):
    # Prepare
    text = "Thanks to Ann at the shop in Leeds, call 555-0100 on Monday."
    spans = [("PERSON", 10, 13), ("GPE", 29, 34), ("PHONE_NUMBER", 41, 49), ("DATE_TIME", 53, 59)]
    # Execute
    row = bench.to_row("x-1", text, spans, 3)
    # Assert
    assert row["entities"] == [
        {"type": "PERSON", "text": "Ann"},
        {"type": "LOCATION", "text": "Leeds"},
        {"type": "PHONE_NUMBER", "text": "555-0100"},
    ]
    assert row["unscored"] == [{"type": "DATE_TIME", "text": "Monday"}]
    assert row["template"] == 3


def test_when_value_also_inside_another_word_then_row_dropped(bench):
    text = "Al said Also works."  # load_labelled would mark "Al" in "Also" as a name too
    assert bench.to_row("x-2", text, [("PERSON", 0, 2)], 0) is None


def test_when_value_repeated_as_two_spans_then_row_kept_once(bench):
    text = "From Bath to Bath in a van."
    row = bench.to_row("x-3", text, [("GPE", 5, 9), ("GPE", 13, 17)], 0)
    assert row["entities"] == [{"type": "LOCATION", "text": "Bath"}]


def test_when_templates_split_then_disjoint_seeded_and_every_kind_in_both(bench):
    # Prepare
    templates = [f"t{i} {{{{{'email' if i % 4 == 0 else 'name'}}}}}" for i in range(12)]

    def kinds(t):
        return {"EMAIL" if "email" in t else "PERSON"}

    # Execute
    dev, heldout = bench.split_templates(templates, 17, kinds)
    # Assert
    assert sorted(dev + heldout) == list(range(12))
    assert (dev, heldout) == bench.split_templates(templates, 17, kinds)
    for group in (dev, heldout):
        assert {"EMAIL", "PERSON"} <= set().union(*(kinds(templates[i]) for i in group))


def test_when_product_words_counted_then_overlapping_spans_remove_them(bench):
    # Prepare
    text = "Fender's strap and the Shure SM58 beat my old fender and my BOSS's boss."
    words = frozenset({"fender", "shure", "sm58", "boss"})
    # Execute
    spots = bench.occurrences(text, words)
    kept, total = bench.count_kept(spots, [(23, 28)])  # "Shure" taken for a name
    # Assert
    assert [text[s:e] for s, e in spots] == ["Fender's", "Shure", "SM58", "BOSS's"]  # lower case: not a name
    assert (kept, total) == (3, 4)


def test_when_nothing_found_then_all_kept(bench):
    assert bench.count_kept([(0, 4), (5, 9)], []) == (2, 2)
    assert bench.count_kept([], [(0, 3)]) == (0, 0)


def test_when_name_words_built_then_brands_and_models_not_common_words(bench):
    # Prepare
    titles = ["Fender Classic Guitar Strap", "Shure SM58 Microphone"]
    sentences = [
        "I love my Fender strap.",
        "The classic Fender sound.",
        "A classic look, says Fender fans.",
        "My new Shure mic is a classic.",
    ]
    # Execute
    words = bench.name_words(titles, sentences, min_seen=3)
    # Assert
    assert words == frozenset({"fender", "sm58"})


@pytest.mark.parametrize("name", ["independent-dev", "independent-heldout"])
def test_when_independent_set_committed_then_large_labelled_and_every_type_present(bench, name):
    rows = [json.loads(line) for line in (PII_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 500
    assert {e["type"] for r in rows for e in r["entities"]} == set(bench.TYPES)
    for r in rows:
        assert all(e["text"] in r["text"] for e in r["entities"] + r["unscored"]), r["id"]


def test_when_proportion_of_nothing_then_json_safe_nones(bench):
    assert bench.proportion(0, 0) == {"n": 0, "k": 0, "value": None, "ci95": None}
    assert bench.proportion(3, 4)["value"] == 0.75
