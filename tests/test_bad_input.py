"""Bad input everywhere, generated (hypothesis): whatever a user feeds the review and catalogue parsers,
the store format, a policy file or the run config, the answer is a result or one line naming the
problem, of PrivRec's own error types; never a traceback from deeper down, never a partial output."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.encryption import EncryptionError, Secret, read_encrypted, write_encrypted
from client.policy import PolicyError, PrivacyPolicy
from common.config import ConfigError, RunConfig
from common.data import DataError, load_items, load_reviews

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=8)
REVIEW_KEYS = ("user_id", "item_id", "rating", "timestamp", "summary", "review_text", "reviewer_name", "reviewerID",
               "asin", "overall", "unixReviewTime")
ITEM_KEYS = ("item_id", "title", "category", "categories", "price", "brand", "asin", "description")


def records_of(keys: tuple[str, ...]):
    """JSON-lines files: records over the schema's keys (and others) with any JSON values, or any text."""
    record = st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), JSON_VALUES, max_size=8)
    line = record.map(lambda r: json.dumps(r, allow_nan=True)) | st.text(max_size=40).map(lambda t: t.replace("\n", " "))
    return st.lists(line, max_size=6).map(lambda lines: "\n".join(lines) + "\n")


def _one_line(err: Exception) -> bool:
    return "\n" not in str(err) and len(str(err)) > 10


@SETTINGS
@given(data=st.data(), on_bad=st.sampled_from(["fail", "skip"]))
def test_any_review_or_catalogue_file_loads_or_fails_with_one_data_error(data, on_bad):
    kind = data.draw(st.sampled_from(["reviews", "items"]))
    text = data.draw(records_of(REVIEW_KEYS if kind == "reviews" else ITEM_KEYS))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}.jsonl"
        path.write_text(text)
        try:
            if kind == "reviews":
                reviews, report = load_reviews(path, on_bad=on_bad)
                assert reviews and report.records_ok == len(reviews)
                assert all(r.user_id and r.item_id and 1 <= r.rating <= 5 for r in reviews)
            else:
                items, _ = load_items(path, on_bad=on_bad)
                assert all(item_id == item.item_id and item.title for item_id, item in items.items())
        except DataError as err:
            assert _one_line(err) and str(path) in str(err)


@SETTINGS
@given(data=st.data())
def test_a_damaged_store_file_never_opens_and_says_so_in_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.prv"
        secret = Secret.from_key_bytes(bytes(range(32)))
        write_encrypted(path, b"reviews " * 5000, secret, chunk_size=4096)
        raw = bytearray(path.read_bytes())
        damage = data.draw(st.sampled_from(["flip", "truncate", "extend", "garbage"]))
        if damage == "flip":
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
        elif damage == "truncate":
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        elif damage == "extend":
            raw += data.draw(st.binary(min_size=1, max_size=64))
        else:
            raw = bytearray(data.draw(st.binary(max_size=200)))
        path.write_bytes(bytes(raw))
        try:
            read_encrypted(path, secret)
        except EncryptionError as err:
            assert _one_line(err)
        else:
            raise AssertionError(f"a {damage}d store opened")


@SETTINGS
@given(text=st.text(alphabet=string.printable, max_size=200)
       | st.dictionaries(st.sampled_from(["require-dp", "epsilon-budget", "delta", "max-epsilon-per-round",
                                          "accountant", "min-users-per-reply", "eval-noise-multiplier", "other"]),
                         st.integers(-5, 5) | st.floats() | st.booleans() | st.text(max_size=5), max_size=5)
       .map(lambda d: "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, float) or v == v else 'nan'}"
                                for k, v in d.items())))
def test_any_policy_file_loads_or_fails_with_one_policy_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.prv.policy.toml"
        path.write_text(text)
        try:
            policy = PrivacyPolicy.load(path)
        except PolicyError as err:
            assert _one_line(err)
        else:
            assert policy.epsilon_budget > 0 and 0 < policy.delta < 1


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["num-clients", "num-rounds", "dp", "learning-rate", "target-epsilon",
                                               "aggregator", "trim-fraction", "min-train-clients", "secagg-threshold",
                                               "device", "lora-r", "unknown-key"]),
                              st.integers(-3, 50) | st.floats(allow_nan=True) | st.booleans() | st.text(max_size=8),
                              max_size=6))
def test_any_run_config_is_valid_or_refused_with_one_config_error(values):
    try:
        cfg = RunConfig.from_mapping(values)
    except ConfigError as err:
        assert _one_line(err) and "`" in str(err)  # names the setting
    else:
        assert cfg.num_clients >= 1 and cfg.min_train_clients <= cfg.num_clients
