"""Encryption at rest for a client's local store: chunked AES-256-GCM files (format version 1).

Guarantee: a file written here is confidential and its integrity is checked as a whole. Without
the secret nothing of the content can be read, and a wrong key, any changed byte (header or
body), truncation (also at a chunk boundary), dropped, reordered, duplicated or appended chunks
are all detected and raise :class:`EncryptionError`; no plaintext of a damaged chunk is returned.

What must stay secret: the passphrase (or the key file, which *is* the key). The header is
public: anyone can see the format version, the key-derivation settings, the chunk size and,
from the file length, roughly how much data is stored. Stores made with a passphrase are only
as strong as the passphrase; Argon2id with 64 MiB (the default) makes guessing expensive.

Streaming: :func:`iter_decrypted` authenticates each chunk before yielding it, but truncation
or tampering *after* a chunk shows up only when the reader reaches it. Treat yielded data as
confirmed only once the iteration has finished without an error (:func:`read_encrypted` does).

Errors: every failure a user can cause (not a store, unsupported version, unknown key
derivation, unsafe header settings, wrong key, tampered or truncated file, file exists,
unreadable or unwritable file, malformed key file) raises :class:`EncryptionError` with one
line that names the file and the fix. Messages never contain the passphrase or the key.

Format version 1 (integers big-endian)::

    header (65 bytes)
      magic        8  b"PRIVREC\\x00"
      version      1  = 1
      kdf id       1  1 = argon2id, 2 = scrypt, 3 = key file
      kdf params  12  argon2id: iterations, memory_kib, lanes | scrypt: log2_n, r, p | key file: 0
      salt        16  random per write
      nonce prefix 7  random per write
      chunk size   4  plaintext bytes per chunk (1 .. 64 MiB)
      key check   16  HMAC-SHA256(check key, the 49 header bytes above)[:16]
    body: chunk i = AES-256-GCM(enc key, nonce = prefix || i u32 || last u8,
                                aad = header || i u32 || last u8); chunk_size + 16 bytes,
          the final chunk (last = 1) may be shorter; empty data = one empty final chunk.

    master key = Argon2id / scrypt(NFC-normalised UTF-8 passphrase, salt, 32 bytes) or the
    32 key-file bytes; enc key / check key = HKDF-SHA256(master, salt,
    info b"privrec/v1/aes-256-gcm" / b"privrec/v1/key-check").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import logging
import os
import stat
import struct
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from common.files import fsync_folder

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

MAGIC = b"PRIVREC\x00"
FORMAT_VERSION = 1
KDF_IDS = {"argon2id": 1, "scrypt": 2, "key-file": 3}
KDF_NAMES = {number: name for name, number in KDF_IDS.items()}
KDF_PARAM_NAMES = {"argon2id": ("iterations", "memory_kib", "lanes"), "scrypt": ("log2_n", "r", "p")}

KEY_SIZE = 32
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
KEY_CHECK_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
MAX_KDF_MEMORY = 4 << 30  # bytes; a header asking for more is refused before deriving
MAX_CHUNKS = 1 << 32

_PREFIX = struct.Struct(">8sBBIII16s7sI")  # header bytes covered by the key check
HEADER_SIZE = _PREFIX.size + KEY_CHECK_SIZE
_CHUNK_INFO = struct.Struct(">IB")
_ENC_INFO = b"privrec/v1/aes-256-gcm"
_CHECK_INFO = b"privrec/v1/key-check"
_CACHE_LIMIT = 64
_READ_HINT = "restore it from a backup or prepare it again"


class EncryptionError(Exception):
    """An encrypted store cannot be written, read or unlocked; the message names the file and fix."""


# ----- key derivation settings ------------------------------------------------------------------
@dataclass(frozen=True)
class KdfSettings:
    """Passphrase key derivation: ``argon2id`` (default) or ``scrypt`` and its three cost numbers.

    ``params`` are (iterations, memory_kib, lanes) for argon2id and (log2_n, r, p) for scrypt;
    empty means the defaults. Build with :meth:`argon2id`, :meth:`scrypt` or :meth:`fast`.
    """

    name: str = "argon2id"
    params: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in KDF_PARAM_NAMES:
            raise EncryptionError(f"unknown key derivation {self.name!r}; choose 'argon2id' or 'scrypt'")
        if not self.params:
            object.__setattr__(self, "params", _DEFAULT_PARAMS[self.name])
        if len(self.params) != 3 or any(type(v) is not int for v in self.params):
            raise EncryptionError(f"{self.name} needs three integers {KDF_PARAM_NAMES[self.name]}, got {self.params!r}")
        object.__setattr__(self, "params", tuple(self.params))
        for (name, low, high), value in zip(_limits(self.name, self.params), self.params, strict=False):
            if not low <= value <= high:
                raise EncryptionError(f"{self.name} {name} should be between {low} and {high}, got {value}")

    @classmethod
    def argon2id(cls, iterations: int = 3, memory_kib: int = 65536, lanes: int = 4) -> KdfSettings:
        """Argon2id settings (defaults: 3 passes over 64 MiB with 4 lanes)."""
        return cls("argon2id", (iterations, memory_kib, lanes))

    @classmethod
    def scrypt(cls, log2_n: int = 17, r: int = 8, p: int = 1) -> KdfSettings:
        """scrypt settings with n = 2**log2_n (defaults: n = 2**17, r = 8, p = 1, 128 MiB)."""
        return cls("scrypt", (log2_n, r, p))

    @classmethod
    def fast(cls) -> KdfSettings:
        """Cheap argon2id (1 pass, 8 MiB, 1 lane): weaker against guessing, for tests and simulations."""
        return cls("argon2id", (1, 8192, 1))

    def as_dict(self) -> dict[str, int]:
        """Parameter name -> value."""
        return dict(zip(KDF_PARAM_NAMES[self.name], self.params, strict=False))

    def memory_bytes(self) -> int:
        """Memory one derivation needs."""
        if self.name == "argon2id":
            return self.params[1] * 1024
        return 128 * self.params[1] << self.params[0]


_DEFAULT_PARAMS = {"argon2id": (3, 65536, 4), "scrypt": (17, 8, 1)}


@dataclass(frozen=True)
class KdfLimits:
    """The costliest key derivation a reader will run for a header it has not yet verified.

    A header's settings are read before the key can be checked, so a crafted file could
    otherwise demand minutes of work and gigabytes of memory; a device's privacy policy can
    set its own limits (``max-kdf-memory-mib``, ``max-kdf-iterations``).
    """

    max_memory_mib: int = 1024
    max_iterations: int = 10  # argon2id passes; scrypt's parallel passes p

    def check(self, kdf: KdfSettings, source: str) -> None:
        """Raise :class:`EncryptionError` if ``kdf`` costs more than these limits allow."""
        passes = kdf.params[0] if kdf.name == "argon2id" else kdf.params[2]
        memory_mib = kdf.memory_bytes() >> 20
        if memory_mib > self.max_memory_mib or passes > self.max_iterations:
            raise EncryptionError(
                f"{source} asks for a costlier key derivation ({kdf.name}, {memory_mib} MiB, "
                f"{passes} passes) than this device allows ({self.max_memory_mib} MiB, "
                f"{self.max_iterations} passes); it was not derived. Raise "
                "`max-kdf-memory-mib`/`max-kdf-iterations` in the device policy only if "
                "you made this store yourself"
            )


def _limits(name: str, params: tuple[int, ...]) -> list[tuple[str, int, int]]:
    if name == "argon2id":
        lanes = params[2] if 1 <= params[2] <= 64 else 1
        return [("iterations", 1, 100), ("memory_kib", 8 * lanes, MAX_KDF_MEMORY // 1024), ("lanes", 1, 64)]
    r = params[1] if 1 <= params[1] <= 32 else 1
    max_log2_n = min(22, (MAX_KDF_MEMORY // (128 * r)).bit_length() - 1)
    return [("log2_n", 1, max_log2_n), ("r", 1, 32), ("p", 1, 16)]


# ----- secrets ------------------------------------------------------------------------------------
class Secret:
    """What unlocks a store: a passphrase or a 32-byte key; ``repr`` never shows it."""

    __slots__ = ("_cache", "_kind", "_material")

    def __init__(self, kind: str, material: bytes) -> None:
        """Use :meth:`from_passphrase`, :meth:`from_key_bytes` or :meth:`from_key_file` instead."""
        self._kind = kind
        self._material = material
        self._cache: dict[tuple[str, tuple[int, ...], bytes], bytes] = {}

    @classmethod
    def from_passphrase(cls, text: str) -> Secret:
        """A passphrase; it is NFC-normalised and UTF-8 encoded before key derivation."""
        if not isinstance(text, str):
            raise TypeError(f"a passphrase must be str, got {type(text).__name__}")
        if not text:
            raise EncryptionError("the passphrase is empty; give a passphrase of at least 8 characters")
        return cls("passphrase", unicodedata.normalize("NFC", text).encode("utf-8"))

    @classmethod
    def from_key_bytes(cls, key: bytes) -> Secret:
        """A raw 32-byte key (what a key file holds)."""
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
            size = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
            raise EncryptionError(f"a key must be {KEY_SIZE} bytes, got {size}; create one with make_key_file")
        return cls("key-file", bytes(key))

    @classmethod
    def from_key_file(cls, path: PathLike) -> Secret:
        """The key in ``path``: 64 hex characters and an optional trailing newline."""
        file = Path(path)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise EncryptionError(
                f"key file {file} not found; check the path or create one with make_key_file"
            ) from None
        except OSError as err:
            raise EncryptionError(
                f"cannot read key file {file}: {err.strerror or err}; check its permissions"
            ) from None
        warn_if_shared(file, "key file")
        text = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
        if len(text) != 2 * KEY_SIZE:
            raise EncryptionError(
                f"{file} is not a PrivRec key file: expected {2 * KEY_SIZE} hex characters, "
                f"found {len(text)} bytes; pass the right file or create one with make_key_file"
            )
        try:
            key = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise EncryptionError(
                f"{file} is not a PrivRec key file: it holds characters other than hex "
                "digits; pass the right file or create one with make_key_file"
            ) from None
        return cls("key-file", key)

    @property
    def kind(self) -> str:
        """``"passphrase"`` or ``"key-file"``."""
        return self._kind

    def __repr__(self) -> str:
        return f"Secret(kind={self._kind!r}, value=<hidden>)"

    __str__ = __repr__

    def master_key(self, kdf: KdfSettings | None, salt: bytes) -> bytes:
        """The 32-byte master key for a header's settings (cached per kdf, params and salt)."""
        if self._kind == "key-file":
            return self._material
        assert kdf is not None, "a passphrase needs key derivation settings"
        cache_key = (kdf.name, kdf.params, salt)
        cached = self._cache.get(cache_key)
        if cached is None:
            started = time.perf_counter()
            cached = _derive(self._material, kdf, salt)
            logger.debug("derived a key with %s %s in %.2f s", kdf.name, kdf.as_dict(), time.perf_counter() - started)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.pop(next(iter(self._cache)))
            self._cache[cache_key] = cached
        return cached


def _derive(passphrase: bytes, kdf: KdfSettings, salt: bytes) -> bytes:
    try:
        if kdf.name == "argon2id":
            iterations, memory_kib, lanes = kdf.params
            return Argon2id(
                salt=salt, length=KEY_SIZE, iterations=iterations, lanes=lanes, memory_cost=memory_kib
            ).derive(passphrase)
        log2_n, r, p = kdf.params
        return Scrypt(salt=salt, length=KEY_SIZE, n=1 << log2_n, r=r, p=p).derive(passphrase)
    except UnsupportedAlgorithm:
        raise EncryptionError(
            f"{kdf.name} is not available in this build of the cryptography package; "
            "upgrade cryptography or use the other key derivation"
        ) from None
    except MemoryError:
        raise EncryptionError(
            f"not enough memory for {kdf.name} ({kdf.memory_bytes() >> 20} MiB); "
            "free memory or use smaller key derivation settings"
        ) from None


def make_key_file(path: PathLike, *, force: bool = False) -> Path:
    """Write a new random 32-byte key as hex to ``path`` (mode 0o600, atomic); never overwrites unless force."""
    target = Path(path)
    exists = (
        f"{target} already exists; pass --force to replace it (stores locked with the old key "
        "cannot be opened with the new one)"
    )
    if not force and (target.exists() or target.is_symlink()):
        raise EncryptionError(exists)
    with contextlib.suppress(OSError):  # a new device's folder; an unwritable one fails just below
        target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = _new_temp(target)
    try:
        with handle:
            os.chmod(tmp, 0o600)
            handle.write(os.urandom(KEY_SIZE).hex().encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, target, force=force, exists_message=exists)
    except OSError as err:
        _remove_quietly(tmp)
        raise EncryptionError(
            f"cannot write key file {target}: {err.strerror or err}; check that its folder exists and is writable"
        ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    logger.info("wrote a new key file %s", target)
    return target


def warn_if_shared(path: Path, what: str) -> None:
    """Log a warning when a secret-holding file can be read by group or others (POSIX only)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "%s %s can be read by other users (mode %o); run: chmod 600 %s", what, path, stat.S_IMODE(mode), path
        )


# ----- header -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """The public part of a store: format version, key derivation and chunk size."""

    version: int
    kdf_name: str
    kdf_params: dict[str, int]
    chunk_size: int

    @property
    def kdf(self) -> KdfSettings | None:
        """The passphrase key derivation settings, or None for a key-file store."""
        if self.kdf_name == "key-file":
            return None
        return KdfSettings(self.kdf_name, tuple(self.kdf_params.values()))


@dataclass(frozen=True)
class _Parsed:
    raw: bytes
    kdf: KdfSettings | None
    salt: bytes
    nonce_prefix: bytes
    chunk_size: int
    key_check: bytes

    def public(self) -> Header:
        if self.kdf is None:
            return Header(FORMAT_VERSION, "key-file", {}, self.chunk_size)
        return Header(FORMAT_VERSION, self.kdf.name, self.kdf.as_dict(), self.chunk_size)


def _build_header(secret: Secret, kdf: KdfSettings | None, chunk_size: int) -> tuple[bytes, bytes, AESGCM]:
    params: tuple[int, ...]
    if secret.kind == "key-file":
        kdf_id, kdf_used, params = KDF_IDS["key-file"], None, (0, 0, 0)
    else:
        kdf_used = kdf or KdfSettings()
        kdf_id, params = KDF_IDS[kdf_used.name], kdf_used.params
    salt, prefix = os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE)
    covered = _PREFIX.pack(MAGIC, FORMAT_VERSION, kdf_id, *params, salt, prefix, chunk_size)
    enc_key, check_key = _subkeys(secret.master_key(kdf_used, salt), salt)
    return covered + _key_check(check_key, covered), prefix, AESGCM(enc_key)


def _subkeys(master: bytes, salt: bytes) -> tuple[bytes, bytes]:
    def expand(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(master)

    return expand(_ENC_INFO), expand(_CHECK_INFO)


def _key_check(check_key: bytes, covered: bytes) -> bytes:
    return hmac.new(check_key, covered, hashlib.sha256).digest()[:KEY_CHECK_SIZE]


def _parse_header(raw: bytes, source: str) -> _Parsed:
    if raw and len(raw) < HEADER_SIZE and MAGIC.startswith(raw[: len(MAGIC)]):
        raise EncryptionError(
            f"{source} is damaged: its header is cut short ({len(raw)} of {HEADER_SIZE} bytes); {_READ_HINT}"
        )
    if raw[: len(MAGIC)] != MAGIC:
        raise EncryptionError(
            f"{source} is not a PrivRec encrypted file (it does not start with the PrivRec "
            "marker); pass an encrypted store or prepare one first"
        )
    _magic, version, kdf_id, a, b, c, salt, prefix, chunk_size = _PREFIX.unpack(raw[: _PREFIX.size])
    if version != FORMAT_VERSION:
        raise EncryptionError(
            f"{source} uses store format version {version}, but this PrivRec reads only "
            f"version {FORMAT_VERSION}; open it with a matching PrivRec version"
        )
    if kdf_id not in KDF_NAMES:
        raise EncryptionError(
            f"{source} names an unknown key derivation (id {kdf_id}); it was tampered with "
            f"or made by a newer PrivRec; {_READ_HINT}"
        )
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise EncryptionError(
            f"{source} has an unsafe chunk size {chunk_size} in its header (allowed 1 .. "
            f"{MAX_CHUNK_SIZE}); it was tampered with; {_READ_HINT}"
        )
    kdf: KdfSettings | None = None
    if KDF_NAMES[kdf_id] == "key-file":
        if (a, b, c) != (0, 0, 0):
            raise EncryptionError(
                f"{source} has key-derivation numbers in a key-file header; it was tampered with; {_READ_HINT}"
            )
    else:
        try:
            kdf = KdfSettings(KDF_NAMES[kdf_id], (a, b, c))
        except EncryptionError as err:
            raise EncryptionError(
                f"{source} asks for unsafe key-derivation settings ({err}); it was tampered "
                f"with or not made by PrivRec; {_READ_HINT}"
            ) from None
    return _Parsed(raw[:HEADER_SIZE], kdf, salt, prefix, chunk_size, raw[_PREFIX.size : HEADER_SIZE])


def _unlock(parsed: _Parsed, secret: Secret, source: str, limits: KdfLimits | None = None) -> AESGCM:
    if parsed.kdf is not None:
        (limits or KdfLimits()).check(parsed.kdf, source)
    if parsed.kdf is None and secret.kind != "key-file":
        raise EncryptionError(f"{source} is locked with a key file, not a passphrase; pass --key-file")
    if parsed.kdf is not None and secret.kind == "key-file":
        raise EncryptionError(
            f"{source} is locked with a passphrase, not a key file; pass --passphrase-file or --passphrase-env"
        )
    enc_key, check_key = _subkeys(secret.master_key(parsed.kdf, parsed.salt), parsed.salt)
    if not hmac.compare_digest(_key_check(check_key, parsed.raw[: _PREFIX.size]), parsed.key_check):
        raise EncryptionError(f"wrong passphrase or key for {source} (or its header was changed)")
    return AESGCM(enc_key)


# ----- chunk stream -------------------------------------------------------------------------------
def _chunk_info(index: int, last: bool) -> bytes:
    return _CHUNK_INFO.pack(index, 1 if last else 0)


def _rechunk(data: bytes | Iterable[bytes], chunk_size: int) -> Iterator[tuple[bytes, bool]]:
    pieces: Iterable[bytes] = (data,) if isinstance(data, bytes) else data
    buffer = bytearray()
    for piece in pieces:
        if isinstance(piece, str):
            raise TypeError("data pieces must be bytes, got str; encode the text first")
        view = memoryview(piece).cast("B")
        while view:
            take = min(len(view), chunk_size + 1 - len(buffer))  # one byte more proves a chunk is not last
            buffer += view[:take]
            view = view[take:]
            if len(buffer) > chunk_size:
                with memoryview(buffer) as whole:
                    chunk = bytes(whole[:chunk_size])
                del buffer[:chunk_size]
                yield chunk, False
    yield bytes(buffer), True


def _encrypt_stream(
    data: bytes | Iterable[bytes], secret: Secret, kdf: KdfSettings | None, chunk_size: int
) -> Iterator[bytes]:
    """Header, then each ciphertext chunk."""
    if type(chunk_size) is not int or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise EncryptionError(f"chunk size should be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size!r}")
    header, prefix, aead = _build_header(secret, kdf, chunk_size)
    yield header
    for index, (plain, last) in enumerate(_rechunk(data, chunk_size)):
        if index >= MAX_CHUNKS:
            raise EncryptionError(
                f"too much data for chunk size {chunk_size} (more than 2**32 chunks); use a larger chunk size"
            )
        info = _chunk_info(index, last)
        yield aead.encrypt(prefix + info, plain, header + info)


def _decrypt_stream(handle: IO[bytes], parsed: _Parsed, aead: AESGCM, source: str) -> Iterator[bytes]:
    """Authenticated plaintext chunks; the last chunk must carry the final flag and end the file."""
    full = parsed.chunk_size + TAG_SIZE
    pending = _read(handle, full, source)
    index = 0
    while True:
        following = _read(handle, full, source)
        last = not following
        if index >= MAX_CHUNKS or len(pending) < TAG_SIZE or (not last and len(pending) != full):
            raise _damaged(source, index)
        info = _chunk_info(index, last)
        try:
            plain = aead.decrypt(parsed.nonce_prefix + info, pending, parsed.raw + info)
        except InvalidTag:
            raise _damaged(source, index) from None
        if plain:
            yield plain
        if last:
            return
        pending, index = following, index + 1


def _damaged(source: str, index: int) -> EncryptionError:
    return EncryptionError(
        f"{source} is damaged or was tampered with: chunk {index} failed authentication; {_READ_HINT}"
    )


def _read(handle: IO[bytes], size: int, source: str) -> bytes:
    try:
        return handle.read(size)
    except OSError as err:
        raise EncryptionError(f"cannot read {source}: {err.strerror or err}; check the file and the disk") from None


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise EncryptionError(f"{path} not found; check the path or prepare the store first") from None
    except OSError as err:
        raise EncryptionError(
            f"cannot read {path}: {err.strerror or err}; check the path and its permissions"
        ) from None


def _open_verified(path: Path, secret: Secret, limits: KdfLimits | None = None) -> tuple[IO[bytes], _Parsed, AESGCM]:
    handle = _open(path)
    try:
        parsed = _parse_header(_read(handle, HEADER_SIZE, str(path)), str(path))
        return handle, parsed, _unlock(parsed, secret, str(path), limits)
    except BaseException:
        handle.close()
        raise


def _closing(handle: IO[bytes], chunks: Iterator[bytes]) -> Iterator[bytes]:
    with handle:
        yield from chunks


# ----- atomic files -------------------------------------------------------------------------------
def _new_temp(target: Path) -> tuple[IO[bytes], Path]:
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the caller closes it
            dir=target.parent, delete=False, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as err:
        raise EncryptionError(
            f"cannot write {target}: {err.strerror or err}; check that its folder exists and is writable"
        ) from None
    return handle, Path(handle.name)


def _publish(tmp: Path, target: Path, *, force: bool, exists_message: str) -> None:
    """Move a complete temp file into place; without force, fail if the target appeared meanwhile."""
    if force:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # atomic create-if-absent
        except FileExistsError:
            raise EncryptionError(exists_message) from None
        except OSError:  # file system without hard links
            if target.exists():
                raise EncryptionError(exists_message) from None
            os.replace(tmp, target)
        else:
            os.unlink(tmp)
    fsync_folder(target.parent)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.warning("could not remove temporary file %s (%s); delete it by hand", path, err.strerror)


def _write_temp(
    target: Path, data: bytes | Iterable[bytes], secret: Secret, kdf: KdfSettings | None, chunk_size: int
) -> tuple[Path, int]:
    """Encrypt into a synced temp file beside ``target``; returns its path and size (removed on error).

    Any OS error while writing, flushing, syncing or closing (a full disk shows up at flush for
    small files) becomes one :class:`EncryptionError` line; the target is left as it was.
    """
    handle, tmp = _new_temp(target)
    written = 0
    try:
        try:
            with handle:
                for blob in _encrypt_stream(data, secret, kdf, chunk_size):
                    handle.write(blob)
                    written += len(blob)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise EncryptionError(
                f"cannot write {target}: {err.strerror or type(err).__name__}; check free "
                "space and permissions of its folder (nothing was replaced)"
            ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp, written


# ----- public API ---------------------------------------------------------------------------------
def write_encrypted(
    path: PathLike,
    data: bytes | Iterable[bytes],
    secret: Secret,
    *,
    kdf: KdfSettings | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    force: bool = False,
) -> int:
    """Encrypt ``data`` (bytes or an iterable of byte pieces) into ``path`` atomically; returns bytes written."""
    target = Path(path)
    exists = (
        f"{target} already exists; pass --force to replace it (the old store is kept until the new one is complete)"
    )
    if not force and (target.exists() or target.is_symlink()):
        raise EncryptionError(exists)
    tmp, written = _write_temp(target, data, secret, kdf, chunk_size)
    try:
        _publish(tmp, target, force=force, exists_message=exists)
    except OSError as err:
        _remove_quietly(tmp)
        raise EncryptionError(
            f"cannot write {target}: {err.strerror or err}; check permissions of its folder"
        ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    logger.debug("wrote %s (%d bytes, %s)", target, written, secret.kind)
    return written


def iter_decrypted(path: PathLike, secret: Secret, *, limits: KdfLimits | None = None) -> Iterator[bytes]:
    """Plaintext of ``path`` chunk by chunk, each authenticated before it is yielded.

    The header and key are checked at once (a key derivation costlier than ``limits`` is refused
    before it runs); damage later in the file raises when reached, so trust the data only after
    the iteration finished without an error.
    """
    handle, parsed, aead = _open_verified(Path(path), secret, limits)
    return _closing(handle, _decrypt_stream(handle, parsed, aead, str(path)))


def read_encrypted(path: PathLike, secret: Secret, *, limits: KdfLimits | None = None) -> bytes:
    """The whole authenticated plaintext of ``path``."""
    return b"".join(iter_decrypted(path, secret, limits=limits))


def read_header(path: PathLike) -> Header:
    """The public header of ``path`` (no secret needed), validated."""
    with _open(Path(path)) as handle:
        return _parse_header(_read(handle, HEADER_SIZE, str(path)), str(path)).public()


def encrypt_bytes(
    data: bytes | Iterable[bytes],
    secret: Secret,
    *,
    kdf: KdfSettings | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """In-memory :func:`write_encrypted`: the encrypted file as bytes."""
    return b"".join(_encrypt_stream(data, secret, kdf, chunk_size))


def decrypt_bytes(blob: bytes, secret: Secret, *, source: str = "<encrypted bytes>") -> bytes:
    """In-memory :func:`read_encrypted`; ``source`` names the data in error messages."""
    handle = io.BytesIO(blob)
    parsed = _parse_header(handle.read(HEADER_SIZE), source)
    aead = _unlock(parsed, secret, source)
    return b"".join(_decrypt_stream(handle, parsed, aead, source))


def change_secret(path: PathLike, old: Secret, new: Secret, *, kdf: KdfSettings | None = None) -> None:
    """Re-encrypt ``path`` under ``new``; the original stays untouched unless the new file verifies.

    ``kdf=None`` keeps the file's passphrase key derivation (or uses the default when the file
    used a key file); the chunk size is kept.
    """
    target = Path(path)
    handle, parsed, aead = _open_verified(target, old)
    kdf = kdf or parsed.kdf
    digest = hashlib.sha256()

    def plaintext() -> Iterator[bytes]:
        with handle:
            for piece in _decrypt_stream(handle, parsed, aead, str(target)):
                digest.update(piece)
                yield piece

    try:
        tmp, _ = _write_temp(target, plaintext(), new, kdf, parsed.chunk_size)
    finally:
        handle.close()
    try:
        check = hashlib.sha256()
        tmp_handle, tmp_parsed, tmp_aead = _open_verified(tmp, new)
        with tmp_handle:
            for piece in _decrypt_stream(tmp_handle, tmp_parsed, tmp_aead, str(tmp)):
                check.update(piece)
        if not hmac.compare_digest(check.digest(), digest.digest()):
            raise EncryptionError(f"re-encrypting {target} did not verify; {target} was left unchanged, try again")
        os.replace(tmp, target)
        fsync_folder(target.parent)
    except OSError as err:
        _remove_quietly(tmp)
        raise EncryptionError(
            f"cannot replace {target}: {err.strerror or err}; check permissions of its "
            f"folder ({target} was left unchanged)"
        ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    logger.info("changed the secret of %s (%s -> %s)", target, old.kind, new.kind)
