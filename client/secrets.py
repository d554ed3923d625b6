"""Where the secret of an encrypted store comes from: a passphrase file, an environment variable,
a key file or an interactive prompt.

Exactly one source is used. The passphrase is deliberately never accepted as a command-line
value (it would end up in shell history and in the process list), and it is never logged.
"""

from __future__ import annotations

import getpass
import logging
import os
from pathlib import Path

from client.encryption import EncryptionError, Secret, warn_if_shared

logger = logging.getLogger(__name__)

MIN_PASSPHRASE_CHARS = 8
_NO_SOURCE = "no passphrase given: use --passphrase-file, --passphrase-env or --key-file"


class SecretError(EncryptionError):
    """A passphrase source is missing, ambiguous, empty or too short."""


def resolve_secret(
    *,
    passphrase_file: str | None = None,
    passphrase_env: str | None = None,
    key_file: str | None = None,
    prompt: bool = False,
    confirm: bool = False,
) -> Secret:
    """The one secret the options name; without any, prompt (if allowed) or fail."""
    given = {"--passphrase-file": passphrase_file, "--passphrase-env": passphrase_env, "--key-file": key_file}
    chosen = [option for option, value in given.items() if value is not None]
    if len(chosen) > 1:
        raise SecretError(f"{', '.join(chosen)} were given together; choose one passphrase source")
    if key_file is not None:
        logger.debug("using key file %s", key_file)
        return Secret.from_key_file(_non_empty(key_file, "--key-file", "the path of a key file"))
    if passphrase_file is not None:
        path = _non_empty(passphrase_file, "--passphrase-file", "the path of a file holding the passphrase")
        return _passphrase(_read_passphrase_file(Path(path)), f"passphrase file {path}")
    if passphrase_env is not None:
        name = _non_empty(passphrase_env, "--passphrase-env", "the name of an environment variable")
        return _passphrase(_read_env(name), f"environment variable {name}")
    if prompt:
        return _passphrase(_ask(confirm), "the prompt")
    raise SecretError(_NO_SOURCE)


def _non_empty(value: str, option: str, what: str) -> str:
    if not value.strip():
        raise SecretError(f"{option} is empty; pass {what}")
    return value


def _passphrase(text: str, source: str) -> Secret:
    if len(text) < MIN_PASSPHRASE_CHARS:
        raise SecretError(
            f"the passphrase from {source} is shorter than {MIN_PASSPHRASE_CHARS} characters; choose a longer one"
        )
    logger.debug("using a passphrase from %s", source)
    return Secret.from_passphrase(text)


def _read_passphrase_file(path: Path) -> str:
    """The file's text without one trailing newline."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SecretError(f"passphrase file {path} not found; check the path") from None
    except OSError as err:
        raise SecretError(f"cannot read passphrase file {path}: {err.strerror or err}; check its permissions") from None
    warn_if_shared(path, "passphrase file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"passphrase file {path} is not UTF-8 text; save it as UTF-8") from None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        raise SecretError(f"passphrase file {path} is empty; write the passphrase in it")
    return text


def _read_env(name: str) -> str:
    """The value of environment variable ``name``, which must be set and non-empty."""
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"environment variable {name} is not set; export it or use --passphrase-file")
    if not value:
        raise SecretError(f"environment variable {name} is empty; set it to the passphrase")
    return value


def _ask(confirm: bool) -> str:
    """Ask for the passphrase on the terminal (twice when ``confirm``)."""
    try:
        text = getpass.getpass("Passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != text:
            raise SecretError("the two passphrases differ; run the command again and type the same one twice")
    except EOFError:
        raise SecretError(
            "no passphrase typed (input ended); use --passphrase-file, --passphrase-env or --key-file"
        ) from None
    if not text:
        raise SecretError("no passphrase typed; type one or use --passphrase-file, --passphrase-env or --key-file")
    return text
