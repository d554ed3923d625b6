"""Passphrase sources: exactly one is used, each failure is one clear line, nothing is logged."""

from __future__ import annotations

import inspect
import logging

import pytest

from client import secrets as secrets_module
from client.encryption import (
    EncryptionError,
    KdfSettings,
    Secret,
    decrypt_bytes,
    encrypt_bytes,
    make_key_file,
)
from client.secrets import SecretError, resolve_secret

PASSPHRASE = "a long enough passphrase"
ENV = "PRIVREC_TEST_PASSPHRASE"
NO_SOURCE = "no passphrase given: use --passphrase-file, --passphrase-env or --key-file"


def _opens_like(secret, passphrase):
    blob = encrypt_bytes(b"x", Secret.from_passphrase(passphrase), kdf=KdfSettings.fast())
    return decrypt_bytes(blob, secret) == b"x"


@pytest.fixture()
def answers(monkeypatch):
    """Replace getpass with a queue of typed answers."""
    typed: list[str] = []

    def fake_getpass(prompt=""):
        if not typed:
            raise EOFError
        return typed.pop(0)

    monkeypatch.setattr(secrets_module.getpass, "getpass", fake_getpass)
    return typed


@pytest.mark.parametrize(
    ("content", "passphrase"),
    [
        (PASSPHRASE + "\n", PASSPHRASE),
        (PASSPHRASE + "\r\n", PASSPHRASE),
        (PASSPHRASE, PASSPHRASE),
        (PASSPHRASE + "\n\n", PASSPHRASE + "\n"),
        ("  spaced passphrase  \n", "  spaced passphrase  "),
    ],
)
def test_when_passphrase_file_given_then_one_trailing_newline_is_stripped(tmp_path, content, passphrase):
    path = tmp_path / "pass.txt"
    path.write_bytes(content.encode())
    secret = resolve_secret(passphrase_file=str(path))
    assert secret.kind == "passphrase"
    assert _opens_like(secret, passphrase)


def test_when_passphrase_env_given_then_it_is_used(monkeypatch):
    monkeypatch.setenv(ENV, PASSPHRASE)
    assert _opens_like(resolve_secret(passphrase_env=ENV), PASSPHRASE)


def test_when_key_file_given_then_a_key_secret_is_returned(tmp_path):
    path = make_key_file(tmp_path / "store.key")
    secret = resolve_secret(key_file=str(path))
    assert secret.kind == "key-file"
    blob = encrypt_bytes(b"x", Secret.from_key_file(path))
    assert decrypt_bytes(blob, secret) == b"x"


@pytest.mark.parametrize(
    "options",
    [
        {"passphrase_file": "p.txt", "passphrase_env": ENV},
        {"passphrase_file": "p.txt", "key_file": "k.key"},
        {"passphrase_env": ENV, "key_file": "k.key", "prompt": True},
        {"passphrase_file": "p.txt", "passphrase_env": ENV, "key_file": "k.key"},
    ],
)
def test_when_several_sources_given_then_error_names_them_and_says_choose_one(options):
    with pytest.raises(SecretError, match="were given together; choose one passphrase source") as info:
        resolve_secret(**options)
    for option in options:
        if option != "prompt":
            assert "--" + option.replace("_", "-") in str(info.value)


def test_when_no_source_and_no_prompt_then_error_lists_the_options():
    with pytest.raises(SecretError, match=NO_SOURCE):
        resolve_secret()


def test_when_passphrase_file_is_missing_or_empty_then_clear_error(tmp_path):
    with pytest.raises(SecretError, match="passphrase file .*missing.txt not found"):
        resolve_secret(passphrase_file=str(tmp_path / "missing.txt"))
    for content in (b"", b"\n"):
        (tmp_path / "empty.txt").write_bytes(content)
        with pytest.raises(SecretError, match="empty.txt is empty; write the passphrase in it"):
            resolve_secret(passphrase_file=str(tmp_path / "empty.txt"))
    with pytest.raises(SecretError, match="cannot read passphrase file"):
        resolve_secret(passphrase_file=str(tmp_path))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 caf\xe9 caf\xe9".encode("latin-1"))
    with pytest.raises(SecretError, match="not UTF-8 text"):
        resolve_secret(passphrase_file=str(tmp_path / "latin1.txt"))
    with pytest.raises(SecretError, match="--passphrase-file is empty"):
        resolve_secret(passphrase_file="")


def test_when_env_var_is_unset_or_empty_then_error_names_it(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(SecretError, match=f"environment variable {ENV} is not set"):
        resolve_secret(passphrase_env=ENV)
    monkeypatch.setenv(ENV, "")
    with pytest.raises(SecretError, match=f"environment variable {ENV} is empty"):
        resolve_secret(passphrase_env=ENV)


def test_when_key_file_is_missing_then_encryption_error(tmp_path):
    with pytest.raises(EncryptionError, match="not found"):
        resolve_secret(key_file=str(tmp_path / "missing.key"))


def test_when_passphrase_is_short_then_refused_from_every_source(tmp_path, monkeypatch, answers):
    short = "1234567"
    (tmp_path / "p.txt").write_text(short + "\n")
    monkeypatch.setenv(ENV, short)
    answers.append(short)
    for options in ({"passphrase_file": str(tmp_path / "p.txt")}, {"passphrase_env": ENV}, {"prompt": True}):
        with pytest.raises(SecretError, match="shorter than 8 characters; choose a longer one") as info:
            resolve_secret(**options)
        assert short not in str(info.value)
    monkeypatch.setenv(ENV, "12345678")
    assert resolve_secret(passphrase_env=ENV).kind == "passphrase"


def test_when_prompting_then_getpass_answer_is_used(answers):
    answers.append(PASSPHRASE)
    assert _opens_like(resolve_secret(prompt=True), PASSPHRASE)
    assert answers == []


def test_when_confirming_then_both_answers_must_match(answers):
    answers.extend([PASSPHRASE, PASSPHRASE])
    assert _opens_like(resolve_secret(prompt=True, confirm=True), PASSPHRASE)
    answers.extend([PASSPHRASE, PASSPHRASE + "x"])
    with pytest.raises(SecretError, match="the two passphrases differ") as info:
        resolve_secret(prompt=True, confirm=True)
    assert PASSPHRASE not in str(info.value)


def test_when_prompt_gets_no_input_then_clear_error(answers):
    with pytest.raises(SecretError, match="no passphrase typed"):
        resolve_secret(prompt=True)
    answers.append("")
    with pytest.raises(SecretError, match="no passphrase typed"):
        resolve_secret(prompt=True)


def test_when_a_source_is_given_then_prompt_is_not_used(monkeypatch, answers):
    monkeypatch.setenv(ENV, PASSPHRASE)
    answers.append("typed but unused")
    assert _opens_like(resolve_secret(passphrase_env=ENV, prompt=True), PASSPHRASE)
    assert answers == ["typed but unused"]


def test_when_secrets_resolved_then_passphrase_never_reaches_the_log(tmp_path, monkeypatch, caplog, answers):
    (tmp_path / "p.txt").write_text(PASSPHRASE)
    monkeypatch.setenv(ENV, PASSPHRASE)
    answers.append(PASSPHRASE)
    with caplog.at_level(logging.DEBUG):
        resolve_secret(passphrase_file=str(tmp_path / "p.txt"))
        resolve_secret(passphrase_env=ENV)
        secret = resolve_secret(prompt=True)
        encrypt_bytes(b"x", secret, kdf=KdfSettings.fast())
    assert caplog.records
    assert PASSPHRASE not in caplog.text


def test_when_inspected_then_there_is_no_way_to_pass_the_passphrase_itself():
    names = set(inspect.signature(resolve_secret).parameters)
    assert names == {"passphrase_file", "passphrase_env", "key_file", "prompt", "confirm"}
    assert issubclass(SecretError, EncryptionError)
