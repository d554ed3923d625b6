"""`privrec client prepare` and the local store: anonymised, pseudonymised, encrypted, safe on bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.encryption import KdfSettings, Secret, read_encrypted
from client.prepare import PrepareError, prepare_store
from client.store import LocalStore, StoreError, pseudonym
from common.cli import app
from common.config import DEMO_DATA_DIR
from common.data import DataError

ITEMS = DEMO_DATA_DIR / "items.jsonl"
PASSPHRASE = "correct horse battery staple"
PLANTED = ("Quinn Harlow", "quinn.h@example.com", "(615) 555-0142", "Quinn")


def _reviews(path: Path) -> Path:
    item_ids = [json.loads(line)["item_id"] for line in ITEMS.read_text().splitlines()[:4]]
    rows = [
        {"user_id": "U-REAL-042", "item_id": item_ids[0], "rating": 5, "timestamp": 1600000000 + i,
         "summary": "Great", "reviewer_name": "Quinn Harlow",
         "review_text": f"Quinn here. Email quinn.h@example.com or call (615) 555-0142. Item {i}."}
        for i in range(3)
    ] + [{"user_id": "U-OTHER-7", "item_id": item_ids[3], "rating": 3, "timestamp": 1600000100,
          "summary": "ok", "review_text": "Fine strings, my buddy Dave agreed.", "reviewer_name": "Bo"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def store(tmp_path):
    secret = Secret.from_passphrase(PASSPHRASE)
    out = tmp_path / "client.prv"
    meta = prepare_store(_reviews(tmp_path / "raw.jsonl"), ITEMS, out, secret, kdf=KdfSettings.fast(),
                         progress=False)
    return out, secret, meta


def test_when_prepared_then_store_holds_no_identifiers_and_no_plain_text(store):
    out, secret, meta = store
    raw = out.read_bytes()
    for value in PLANTED + ("U-REAL-042", "Great"):
        assert value.encode() not in raw  # encrypted at rest
    plain = read_encrypted(out, secret).decode()
    for value in PLANTED + ("U-REAL-042", "U-OTHER-7", "Dave"):
        assert value not in plain  # anonymised and pseudonymised inside too
    local = LocalStore.open(out, secret)
    key = local.metadata.pseudonym_key
    pseudonyms = {r.user_id for r in local.reviews}
    assert pseudonyms == {pseudonym(u, key) for u in ("U-REAL-042", "U-OTHER-7")}  # HMAC under the store's key
    unkeyed = {"u" + hashlib.sha256(u.encode()).hexdigest()[:20] for u in ("U-REAL-042", "U-OTHER-7")}
    assert not pseudonyms & unkeyed and len(key) == 64
    assert all(r.reviewer_name is None for r in local.reviews)
    assert "<EMAIL_ADDRESS>" in local.reviews[0].text and "<PERSON>" in local.reviews[0].text
    assert meta.pii_counts["EMAIL_ADDRESS"] == 3 and meta.num_reviews == 4
    assert meta.own_names["display-names-remaining"] == 0
    assert "pseudonym_key" not in meta.public()


def test_when_the_same_reviews_are_prepared_twice_then_pseudonyms_differ(store, tmp_path):
    """Keyed, not hashed: a second device with the same users cannot link them to the first."""
    out, secret, _ = store
    again = tmp_path / "again.prv"
    prepare_store(_reviews(tmp_path / "raw2.jsonl"), ITEMS, again, secret, kdf=KdfSettings.fast(), progress=False)
    first = {r.user_id for r in LocalStore.open(out, secret).reviews}
    second = {r.user_id for r in LocalStore.open(again, secret).reviews}
    assert len(first) == len(second) == 2 and not first & second


def test_when_prepared_then_ledger_and_strict_policy_sit_beside_the_store(store):
    from client.policy import PrivacyPolicy, policy_path
    from client.privacy_ledger import LedgerKey, PrivacyLedger

    out, secret, _ = store
    assert PrivacyPolicy.load(policy_path(out)) == PrivacyPolicy()  # DP required until the owner says otherwise
    ledger = PrivacyLedger.open(out, LedgerKey.of_store(LocalStore.open(out, secret).metadata.pseudonym_key))
    assert ledger.history == [] and ledger.version == 1


def test_when_prepared_then_no_temp_or_plain_files_left(store):
    out, _, _ = store
    assert sorted(p.name for p in out.parent.iterdir()) == ["client.prv", "client.prv.ledger",
                                                            "client.prv.policy.toml", "raw.jsonl"]


def test_when_store_exists_then_not_overwritten_without_force(store, tmp_path):
    out, secret, _ = store
    before = out.read_bytes()
    with pytest.raises(PrepareError, match="already exists; pass --force"):
        prepare_store(tmp_path / "raw.jsonl", ITEMS, out, secret, progress=False)
    assert out.read_bytes() == before


@pytest.mark.parametrize("damage", ["wrong-key", "flip-body", "truncate"])
def test_when_store_unreadable_then_clear_error_and_file_unchanged(store, damage):
    out, secret, _ = store
    if damage == "wrong-key":
        secret = Secret.from_passphrase("not the passphrase at all")
    elif damage == "flip-body":
        data = bytearray(out.read_bytes())
        data[100] ^= 1
        out.write_bytes(bytes(data))
    else:
        out.write_bytes(out.read_bytes()[:-20])
    before = out.read_bytes()
    with pytest.raises(StoreError, match="wrong passphrase|damaged|tampered|truncated"):
        LocalStore.open(out, secret)
    assert out.read_bytes() == before


def test_when_inputs_bad_then_one_line_errors(tmp_path):
    secret = Secret.from_passphrase(PASSPHRASE)
    with pytest.raises(DataError, match="file not found"):
        prepare_store(tmp_path / "none.jsonl", ITEMS, tmp_path / "a.prv", secret, progress=False)
    with pytest.raises(DataError, match="file not found"):
        prepare_store(_reviews(tmp_path / "r.jsonl"), tmp_path / "no-items.jsonl", tmp_path / "a.prv",
                      secret, progress=False)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: no reviews; give a JSON-lines file"):
        prepare_store(tmp_path / "empty.jsonl", ITEMS, tmp_path / "a.prv", secret, progress=False)
    (tmp_path / "bad.jsonl").write_text('{"user_id": 1\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        prepare_store(tmp_path / "bad.jsonl", ITEMS, tmp_path / "a.prv", secret, progress=False)
    assert not (tmp_path / "a.prv").exists()


def test_cli_prepare_inspect_and_change_passphrase(tmp_path, monkeypatch):
    runner = CliRunner()
    raw = _reviews(tmp_path / "raw.jsonl")
    monkeypatch.setenv("PRIVREC_PASS", PASSPHRASE)
    monkeypatch.setenv("PRIVREC_NEW", "a different long passphrase")
    out = tmp_path / "s.prv"
    result = runner.invoke(app, ["client", "prepare", "--reviews", str(raw), "--items", str(ITEMS),
                                 "--out", str(out), "--passphrase-env", "PRIVREC_PASS", "--kdf", "scrypt"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["client", "inspect", str(out), "--passphrase-env", "PRIVREC_PASS", "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout[result.stdout.index("{"):])
    assert meta["num_reviews"] == 4 and meta["encryption"]["kdf"] == "scrypt"
    assert "pseudonym_key" not in result.stdout
    result = runner.invoke(app, ["client", "change-passphrase", str(out), "--passphrase-env", "PRIVREC_PASS",
                                 "--new-passphrase-env", "PRIVREC_NEW"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["client", "inspect", str(out), "--passphrase-env", "PRIVREC_PASS"])
    assert result.exit_code == 2 and "wrong passphrase" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--reviews", "missing.jsonl"], "file not found"),
    (["--passphrase-env", "PRIVREC_UNSET_VAR"], "PRIVREC_UNSET_VAR"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("PRIVREC_PASS", PASSPHRASE)
    base = {"--reviews": str(_reviews(tmp_path / "raw.jsonl")), "--items": str(ITEMS),
            "--out": str(tmp_path / "s.prv"), "--passphrase-env": "PRIVREC_PASS"}
    base.update(dict(zip(args[::2], args[1::2])))
    result = CliRunner().invoke(app, ["client", "prepare", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.prv").exists()
