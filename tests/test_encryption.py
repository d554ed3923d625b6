"""Encrypted store files: round trips, and every kind of damage or wrong key is refused cleanly."""

from __future__ import annotations

import logging
import math
import os
import stat
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import client.encryption as enc
from client.encryption import (
    HEADER_SIZE,
    TAG_SIZE,
    EncryptionError,
    KdfSettings,
    Secret,
    change_secret,
    decrypt_bytes,
    encrypt_bytes,
    iter_decrypted,
    make_key_file,
    read_encrypted,
    read_header,
    write_encrypted,
)

FAST = KdfSettings.fast()
PASSPHRASE = "correct horse battery staple"
CHUNK = 64
FULL = CHUNK + TAG_SIZE
# Header offsets (see the module docstring).
VERSION, KDF_ID, ITERATIONS, MEMORY, LANES = 8, 9, 10, 14, 18
SALT, NONCE_PREFIX, CHUNK_SIZE, KEY_CHECK = 22, 38, 45, 49


@pytest.fixture()
def secret():
    return Secret.from_passphrase(PASSPHRASE)


@pytest.fixture()
def key():
    return Secret.from_key_bytes(bytes(range(32)))


def _store(tmp_path, data, secret, name="store.enc", **kwargs):
    path = tmp_path / name
    kwargs = {"kdf": FAST, "chunk_size": CHUNK} | kwargs
    write_encrypted(path, data, secret, **kwargs)
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _refused(path, secret, match):
    """Reading ``path`` fails with ``match`` and leaves the file exactly as it was."""
    before = path.read_bytes()
    with pytest.raises(EncryptionError, match=match) as info:
        read_encrypted(path, secret)
    assert path.read_bytes() == before
    assert PASSPHRASE not in str(info.value)
    return info.value


# ----- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_when_data_written_then_it_reads_back_and_the_size_is_as_specified(tmp_path, secret, size):
    data = os.urandom(size)
    path = tmp_path / "store.enc"
    written = write_encrypted(path, data, secret, kdf=FAST, chunk_size=CHUNK)
    chunks = max(1, math.ceil(size / CHUNK))
    assert written == path.stat().st_size == HEADER_SIZE + size + chunks * TAG_SIZE
    assert read_encrypted(path, secret) == data


def test_when_an_iterable_of_pieces_written_then_it_is_rechunked(tmp_path, secret):
    pieces = [b"", b"a", os.urandom(200), b"", bytearray(b"xyz"), memoryview(os.urandom(70)), os.urandom(64)]
    path = _store(tmp_path, iter(pieces), secret)
    assert read_encrypted(path, secret) == b"".join(bytes(p) for p in pieces)
    assert [len(p) for p in iter_decrypted(path, secret)] == [64, 64, 64, 64, 64, 18]


def test_when_iter_decrypted_then_it_yields_chunk_sized_pieces(tmp_path, secret):
    path = _store(tmp_path, os.urandom(5 * CHUNK + 3), secret)
    assert [len(p) for p in iter_decrypted(path, secret)] == [CHUNK] * 5 + [3]
    assert list(iter_decrypted(_store(tmp_path, b"", secret, name="empty.enc"), secret)) == []


def test_when_default_chunk_size_used_then_a_megabyte_is_one_chunk(tmp_path, key):
    data = os.urandom((1 << 20) + 5)
    path = tmp_path / "big.enc"
    write_encrypted(path, data, key)
    assert [len(p) for p in iter_decrypted(path, key)] == [1 << 20, 5]
    assert read_header(path).chunk_size == 1 << 20


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.binary(max_size=300), max_size=8), chunk_size=st.integers(1, 200))
def test_property_round_trip_for_any_data_and_chunk_size(pieces, chunk_size):
    secret = Secret.from_key_bytes(b"k" * 32)
    data = b"".join(pieces)
    blob = encrypt_bytes(pieces, secret, chunk_size=chunk_size)
    assert decrypt_bytes(blob, secret) == data
    assert len(blob) == HEADER_SIZE + len(data) + max(1, math.ceil(len(data) / chunk_size)) * TAG_SIZE


def test_when_same_data_encrypted_twice_then_ciphertexts_differ(secret):
    first, second = (encrypt_bytes(b"same data", secret, kdf=FAST) for _ in range(2))
    assert first != second
    assert b"same data" not in first


def test_when_key_file_used_then_round_trip_and_kdf_is_ignored(tmp_path):
    key_path = make_key_file(tmp_path / "store.key")
    secret = Secret.from_key_file(key_path)
    path = _store(tmp_path, b"reviews", secret, kdf=KdfSettings.argon2id())
    assert read_encrypted(path, Secret.from_key_file(key_path)) == b"reviews"
    header = read_header(path)
    assert (header.kdf_name, header.kdf_params, header.kdf) == ("key-file", {}, None)


def test_when_default_argon2id_used_then_header_shows_it_and_a_fresh_secret_opens_it(tmp_path, secret):
    path = tmp_path / "store.enc"
    write_encrypted(path, b"default kdf", secret)
    header = read_header(path)
    assert (header.version, header.kdf_name) == (1, "argon2id")
    assert header.kdf_params == {"iterations": 3, "memory_kib": 65536, "lanes": 4}
    assert read_encrypted(path, Secret.from_passphrase(PASSPHRASE)) == b"default kdf"


def test_when_scrypt_used_then_round_trip(tmp_path, secret):
    path = _store(tmp_path, b"scrypt data", secret, kdf=KdfSettings.scrypt(log2_n=10))
    assert read_header(path).kdf == KdfSettings("scrypt", (10, 8, 1))
    assert read_encrypted(path, Secret.from_passphrase(PASSPHRASE)) == b"scrypt data"


def test_when_passphrase_differs_only_in_unicode_normal_form_then_it_still_opens(tmp_path):
    path = _store(tmp_path, b"x", Secret.from_passphrase("caf\u00e9 au lait"))
    assert read_encrypted(path, Secret.from_passphrase("cafe\u0301 au lait")) == b"x"


def test_when_a_file_is_opened_twice_then_the_key_is_derived_once(tmp_path, secret, monkeypatch):
    calls = []
    real = enc._derive
    monkeypatch.setattr(enc, "_derive", lambda *args: calls.append(1) or real(*args))
    path = _store(tmp_path, b"cached", secret)
    for _ in range(3):
        assert read_encrypted(path, secret) == b"cached"
    assert len(calls) == 1


def test_when_bytes_variants_used_then_source_names_the_data_in_errors(secret):
    blob = encrypt_bytes([b"ledger ", b"entry"], secret, kdf=FAST)
    assert decrypt_bytes(blob, secret) == b"ledger entry"
    with pytest.raises(EncryptionError, match="ledger.enc is damaged or was tampered with: chunk 0"):
        decrypt_bytes(blob[:-1], secret, source="ledger.enc")


# ----- wrong secret -------------------------------------------------------------------------------
def test_when_passphrase_is_wrong_then_refused_without_revealing_it(tmp_path, secret):
    path = _store(tmp_path, b"private", secret)
    err = _refused(path, Secret.from_passphrase("not the passphrase"), "wrong passphrase or key for .*store.enc")
    assert "not the passphrase" not in str(err)


def test_when_key_is_wrong_then_refused(tmp_path, key):
    path = _store(tmp_path, b"private", key)
    _refused(path, Secret.from_key_bytes(b"\x01" * 32), "wrong passphrase or key")


def test_when_wrong_kind_of_secret_then_error_says_which_is_needed(tmp_path, secret, key):
    _refused(_store(tmp_path, b"p", secret, name="p.enc"), key, "locked with a passphrase, not a key file")
    _refused(_store(tmp_path, b"k", key, name="k.enc"), secret, "locked with a key file, not a passphrase")


def test_when_iter_decrypted_gets_a_wrong_secret_then_it_fails_before_iterating(tmp_path, secret):
    path = _store(tmp_path, b"private", secret)
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        iter_decrypted(path, Secret.from_passphrase("wrong passphrase!"))


# ----- tampering and truncation -------------------------------------------------------------------
def _flip(path, position, mask=0x01):
    raw = bytearray(path.read_bytes())
    raw[position] ^= mask
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("position", "mask", "match"),
    [
        (0, 0x01, "not a PrivRec encrypted file"),
        (VERSION, 0x02, "format version 3"),
        (KDF_ID, 0x08, "unknown key derivation"),
        (KDF_ID, 0x02, "key-derivation numbers in a key-file header"),
        (ITERATIONS + 3, 0x02, "wrong passphrase or key .*header was changed"),
        (ITERATIONS, 0x80, "unsafe key-derivation settings"),
        (MEMORY + 3, 0x01, "wrong passphrase or key"),
        (MEMORY, 0x80, "unsafe key-derivation settings"),
        (LANES + 3, 0x01, "unsafe key-derivation settings"),
        (SALT, 0x01, "wrong passphrase or key"),
        (SALT + 15, 0x80, "wrong passphrase or key"),
        (NONCE_PREFIX, 0x01, "wrong passphrase or key"),
        (NONCE_PREFIX + 6, 0x40, "wrong passphrase or key"),
        (CHUNK_SIZE + 3, 0x01, "wrong passphrase or key"),
        (CHUNK_SIZE, 0x40, "unsafe chunk size"),
        (KEY_CHECK, 0x01, "wrong passphrase or key"),
        (KEY_CHECK + 15, 0x80, "wrong passphrase or key"),
    ],
)
def test_when_a_header_bit_flips_then_refused(tmp_path, secret, position, mask, match):
    path = _store(tmp_path, os.urandom(150), secret)
    _flip(path, position, mask)
    _refused(path, secret, match)


@pytest.mark.parametrize(
    ("position", "chunk"),
    [
        (HEADER_SIZE, 0),  # first body byte
        (HEADER_SIZE + CHUNK - 1, 0),  # last plaintext byte of chunk 0
        (HEADER_SIZE + FULL - 1, 0),  # tag of chunk 0
        (HEADER_SIZE + FULL + 10, 1),  # body of chunk 1
        (-1, 2),  # tag of the final chunk
    ],
)
def test_when_a_body_or_tag_bit_flips_then_that_chunk_fails(tmp_path, secret, position, chunk):
    path = _store(tmp_path, os.urandom(2 * CHUNK + 22), secret)
    _flip(path, position if position >= 0 else path.stat().st_size + position)
    _refused(path, secret, f"is damaged or was tampered with: chunk {chunk} failed authentication; restore it")


def _edit(path, change):
    raw = path.read_bytes()
    header, body = raw[:HEADER_SIZE], raw[HEADER_SIZE:]
    chunks = [body[i:i + FULL] for i in range(0, len(body), FULL)]
    path.write_bytes(change(header, chunks, raw))


@pytest.mark.parametrize(
    ("size", "change", "match"),
    [
        (3 * CHUNK + 10, lambda h, c, raw: h + b"".join(c[:-1]), "chunk 2 failed"),  # drop last chunk
        (3 * CHUNK, lambda h, c, raw: h + b"".join(c[:-1]), "chunk 1 failed"),  # drop a full last chunk
        (3 * CHUNK, lambda h, c, raw: raw[:-1], "chunk 2 failed"),  # cut inside the final chunk
        (3 * CHUNK, lambda h, c, raw: raw[:HEADER_SIZE + 100], "chunk 1 failed"),  # cut mid-chunk
        (3 * CHUNK, lambda h, c, raw: raw[:HEADER_SIZE + TAG_SIZE - 1], "chunk 0 failed"),
        (3 * CHUNK, lambda h, c, raw: raw[:HEADER_SIZE], "chunk 0 failed"),  # header only
        (3 * CHUNK, lambda h, c, raw: raw[:HEADER_SIZE - 1], "header is cut short"),
        (3 * CHUNK, lambda h, c, raw: raw[:30], "header is cut short"),
        (3 * CHUNK, lambda h, c, raw: raw[:5], "header is cut short"),
        (3 * CHUNK + 10, lambda h, c, raw: h + c[1] + c[0] + c[2] + c[3], "chunk 0 failed"),  # swap
        (3 * CHUNK + 10, lambda h, c, raw: h + c[0] + c[1] + c[1] + c[2] + c[3], "chunk 2 failed"),  # duplicate
        (3 * CHUNK + 10, lambda h, c, raw: h + c[0] + c[2] + c[3], "chunk 1 failed"),  # drop middle
        (3 * CHUNK + 10, lambda h, c, raw: raw + b"\x00", "chunk 3 failed"),  # appended byte
        (3 * CHUNK, lambda h, c, raw: raw + c[-1], "chunk 2 failed"),  # appended copy of the final chunk
        (0, lambda h, c, raw: raw + raw[HEADER_SIZE:], "chunk 0 failed"),  # empty store, chunk appended
    ],
)
def test_when_chunks_are_cut_dropped_reordered_or_appended_then_refused(tmp_path, secret, size, change, match):
    path = _store(tmp_path, os.urandom(size), secret)
    _edit(path, change)
    _refused(path, secret, match)


def test_when_a_later_chunk_is_damaged_then_streaming_stops_there(tmp_path, secret):
    data = os.urandom(3 * CHUNK)
    path = _store(tmp_path, data, secret)
    _flip(path, -1)
    stream = iter_decrypted(path, secret)
    assert next(stream) + next(stream) == data[: 2 * CHUNK]
    with pytest.raises(EncryptionError, match="chunk 2 failed"):
        next(stream)


def test_when_file_is_not_a_store_then_error_says_so(tmp_path, secret):
    for name, content in (("reviews.jsonl", b'{"user_id": "A1", "rating": 5}\n' * 5), ("empty", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        _refused(path, secret, f"{name} is not a PrivRec encrypted file")
        with pytest.raises(EncryptionError, match="not a PrivRec encrypted file"):
            read_header(path)


def test_when_file_is_missing_then_error_names_it(tmp_path, secret):
    with pytest.raises(EncryptionError, match="nope.enc not found"):
        read_encrypted(tmp_path / "nope.enc", secret)
    with pytest.raises(EncryptionError, match="cannot read"):
        read_encrypted(tmp_path, secret)


def test_when_version_is_unsupported_then_refused(tmp_path, secret):
    path = _store(tmp_path, b"future", secret)
    raw = bytearray(path.read_bytes())
    raw[VERSION] = 2
    path.write_bytes(bytes(raw))
    _refused(path, secret, "format version 2, but this PrivRec reads only version 1")
    with pytest.raises(EncryptionError, match="format version 2"):
        read_header(path)


def _crafted(tmp_path, kdf_id, params, chunk_size=CHUNK):
    path = tmp_path / "crafted.enc"
    header = struct.pack(">8sBBIII16s7sI", enc.MAGIC, 1, kdf_id, *params, b"s" * 16, b"n" * 7, chunk_size)
    path.write_bytes(header + b"c" * 16 + b"body" * 10)
    return path


@pytest.mark.parametrize(
    ("kdf_id", "params", "chunk_size", "match"),
    [
        (1, (1, 0xFFFFFFFF, 1), CHUNK, "memory_kib should be between 8 and 4194304"),
        (1, (1, (4 << 20) + 1, 1), CHUNK, "memory_kib"),
        (1, (0xFFFFFFFF, 8192, 1), CHUNK, "iterations"),
        (1, (1, 8192, 0), CHUNK, "lanes"),
        (2, (30, 8, 1), CHUNK, "log2_n should be between 1 and 22"),
        (2, (22, 16, 1), CHUNK, "log2_n should be between 1 and 21"),
        (2, (10, 8, 0xFFFF), CHUNK, "p should be"),
        (3, (0, 1, 0), CHUNK, "key-derivation numbers in a key-file header"),
        (1, (1, 8192, 1), 0, "unsafe chunk size 0"),
        (1, (1, 8192, 1), (64 << 20) + 1, "unsafe chunk size"),
    ],
)
def test_when_header_asks_for_absurd_resources_then_refused_before_deriving(
        tmp_path, secret, monkeypatch, kdf_id, params, chunk_size, match):
    def forbidden(*args, **kwargs):
        raise AssertionError("key derivation must not run for an unsafe header")

    monkeypatch.setattr(enc, "Argon2id", forbidden)
    monkeypatch.setattr(enc, "Scrypt", forbidden)
    path = _crafted(tmp_path, kdf_id, params, chunk_size)
    _refused(path, secret, match)
    with pytest.raises(EncryptionError, match=match):
        read_header(path)


# ----- writing safely -----------------------------------------------------------------------------
def test_when_target_exists_then_write_refuses_and_keeps_it(tmp_path, secret):
    path = tmp_path / "store.enc"
    path.write_bytes(b"keep me")
    with pytest.raises(EncryptionError, match="store.enc already exists; pass --force to replace it"):
        write_encrypted(path, b"new", secret, kdf=FAST)
    assert path.read_bytes() == b"keep me"
    assert _leftovers(tmp_path) == []


def test_when_force_then_existing_file_is_replaced(tmp_path, secret):
    path = _store(tmp_path, b"old", secret)
    _store(tmp_path, b"new", secret, force=True)
    assert read_encrypted(path, secret) == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.enc"]
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_when_input_fails_half_way_then_old_store_is_intact_and_no_temp_file_remains(tmp_path, secret):
    path = _store(tmp_path, b"original", secret)
    before = path.read_bytes()

    def pieces():
        yield os.urandom(3 * CHUNK)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_encrypted(path, pieces(), secret, kdf=FAST, chunk_size=CHUNK, force=True)
    assert path.read_bytes() == before
    assert read_encrypted(path, secret) == b"original"
    assert _leftovers(tmp_path) == []


def test_when_a_piece_is_text_then_type_error_and_no_file(tmp_path, secret):
    with pytest.raises(TypeError, match="encode the text first"):
        write_encrypted(tmp_path / "store.enc", ["text"], secret, kdf=FAST)
    assert list(tmp_path.iterdir()) == []


def test_when_folder_is_missing_then_error_names_the_path(tmp_path, secret):
    with pytest.raises(EncryptionError, match="cannot write .*no/such/store.enc"):
        write_encrypted(tmp_path / "no" / "such" / "store.enc", b"x", secret, kdf=FAST)


@pytest.mark.parametrize("chunk_size", [0, -1, (64 << 20) + 1])
def test_when_chunk_size_is_out_of_range_then_write_refuses(tmp_path, secret, chunk_size):
    with pytest.raises(EncryptionError, match="chunk size should be between 1 and"):
        write_encrypted(tmp_path / "store.enc", b"x", secret, kdf=FAST, chunk_size=chunk_size)
    assert list(tmp_path.iterdir()) == []


# ----- changing the secret ------------------------------------------------------------------------
def test_when_secret_changed_then_only_the_new_one_opens_and_settings_are_kept(tmp_path, secret):
    data = os.urandom(4 * CHUNK + 5)
    path = _store(tmp_path, data, secret)
    new = Secret.from_passphrase("a brand new passphrase")
    change_secret(path, secret, new)
    assert read_encrypted(path, new) == data
    _refused(path, secret, "wrong passphrase")
    header = read_header(path)
    assert (header.kdf, header.chunk_size) == (FAST, CHUNK)
    assert _leftovers(tmp_path) == []


def test_when_secret_changed_to_a_key_file_and_back_then_data_survives(tmp_path, secret):
    path = _store(tmp_path, b"data", secret)
    key = Secret.from_key_file(make_key_file(tmp_path / "k.key"))
    change_secret(path, secret, key)
    assert read_header(path).kdf_name == "key-file"
    change_secret(path, key, secret, kdf=KdfSettings.scrypt(log2_n=10))
    assert read_header(path).kdf_name == "scrypt"
    assert read_encrypted(path, secret) == b"data"


def test_when_old_secret_is_wrong_then_change_leaves_the_file_byte_identical(tmp_path, secret):
    path = _store(tmp_path, os.urandom(3 * CHUNK), secret)
    before = path.read_bytes()
    with pytest.raises(EncryptionError, match="wrong passphrase"):
        change_secret(path, Secret.from_passphrase("wrong passphrase"), Secret.from_passphrase("new passphrase"))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_when_store_is_damaged_then_change_fails_and_leaves_it_byte_identical(tmp_path, secret):
    path = _store(tmp_path, os.urandom(3 * CHUNK), secret)
    _flip(path, -1)
    before = path.read_bytes()
    with pytest.raises(EncryptionError, match="chunk 2 failed"):
        change_secret(path, secret, Secret.from_passphrase("new passphrase"))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


# ----- secrets and key files ----------------------------------------------------------------------
def test_when_key_file_made_then_it_is_private_hex_and_never_overwritten(tmp_path):
    path = make_key_file(tmp_path / "store.key")
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n") and bytes.fromhex(text.strip())
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(EncryptionError, match="store.key already exists; pass --force"):
        make_key_file(path)
    assert path.read_text() == text
    make_key_file(path, force=True)
    assert path.read_text() != text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.key"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "expected 64 hex characters, found 0"),
        (b"ab" * 31 + b"\n", "found 62"),
        (b"zz" * 32, "characters other than hex"),
        (b"ab" * 32 + b"\n\n", "found 65"),
    ],
)
def test_when_key_file_is_malformed_then_error_does_not_show_its_content(tmp_path, content, match):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(EncryptionError, match=match) as info:
        Secret.from_key_file(path)
    assert "zz" not in str(info.value) and "abab" not in str(info.value)


def test_when_key_file_is_missing_then_error_says_how_to_make_one(tmp_path):
    with pytest.raises(EncryptionError, match="key file .*none.key not found; .*make_key_file"):
        Secret.from_key_file(tmp_path / "none.key")


def test_when_key_file_is_readable_by_others_then_a_warning_is_logged(tmp_path, caplog):
    if os.name != "posix":
        pytest.skip("permission bits are POSIX only")
    path = make_key_file(tmp_path / "shared.key")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="client.encryption"):
        Secret.from_key_file(path)
    assert "chmod 600" in caplog.text
    assert path.read_text().strip() not in caplog.text


def test_when_secret_is_printed_then_content_is_hidden():
    secret = Secret.from_passphrase(PASSPHRASE)
    key = Secret.from_key_bytes(b"\xaa" * 32)
    assert PASSPHRASE not in repr(secret) and PASSPHRASE not in str(secret)
    assert "aaaa" not in repr(key) and "\\xaa" not in repr(key)
    assert (secret.kind, key.kind) == ("passphrase", "key-file")


def test_when_secret_values_are_invalid_then_refused():
    with pytest.raises(EncryptionError, match="a key must be 32 bytes, got 31"):
        Secret.from_key_bytes(b"x" * 31)
    with pytest.raises(EncryptionError, match="passphrase is empty"):
        Secret.from_passphrase("")


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("pbkdf2", (), "unknown key derivation 'pbkdf2'; choose 'argon2id' or 'scrypt'"),
        ("argon2id", (0, 8192, 1), "argon2id iterations should be between 1 and 100, got 0"),
        ("argon2id", (1, 8, 4), "memory_kib should be between 32 and"),
        ("argon2id", (1, 5 << 20, 1), "memory_kib should be between"),
        ("scrypt", (23, 8, 1), "scrypt log2_n should be between 1 and 22, got 23"),
        ("scrypt", (10, 8), "needs three integers"),
        ("scrypt", (10, 8, 1.0), "needs three integers"),
    ],
)
def test_when_kdf_settings_are_invalid_then_error_names_the_value(name, params, match):
    with pytest.raises(EncryptionError, match=match):
        KdfSettings(name, params)


def test_when_kdf_settings_default_then_they_match_the_spec():
    assert KdfSettings() == KdfSettings.argon2id() == KdfSettings("argon2id", (3, 65536, 4))
    assert KdfSettings("scrypt") == KdfSettings.scrypt() == KdfSettings("scrypt", (17, 8, 1))
    assert KdfSettings.fast().as_dict() == {"iterations": 1, "memory_kib": 8192, "lanes": 1}
    assert KdfSettings.scrypt().memory_bytes() == 128 << 20
