"""A kill at any moment of a write leaves the previous good version: the encrypted format that stores
and ledgers use, the privacy ledger itself, and every plain state file (common/files.py)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.encryption import Secret, read_encrypted, write_encrypted
from client.privacy_ledger import LedgerKey, PrivacyLedger
from common.files import atomic_write, current_folder, replace_folder

KEY = bytes(range(32))
WRITER = r"""
import sys
from client.encryption import Secret, write_encrypted
path, i = sys.argv[1], 0
print("ready", flush=True)
while True:  # rewrite the file until killed; version i is i repeated over 2 MB
    i += 1
    write_encrypted(path, str(i).encode().ljust(16) * (2 << 16), Secret.from_key_bytes(bytes(range(32))), force=True)
"""
LEDGER_WRITER = r"""
import sys
import opacus.accountants  # the accountant's import, before the clock starts
from client.policy import PrivacyPolicy
from client.privacy_ledger import LedgerKey, open_locked
key, policy = LedgerKey.of_store("cd" * 32), PrivacyPolicy(epsilon_budget=1e9, max_epsilon_per_round=1e9)
print("ready", flush=True)
while True:  # one release and one transparency entry per round, each a save, until killed
    with open_locked(sys.argv[1], key) as ledger:
        next_round = len(ledger.events) + 1
        ledger.record("train", [(1.0, 0.01, 1)], policy, run_id=1, server_round=next_round)
        ledger.record_sent({"run": 1, "round": next_round, "message": "train"})
"""

FOLDER_WRITER = r"""
import sys
from pathlib import Path
from common.files import replace_folder
i = 0
print("ready", flush=True)
while True:  # swap in version i of a two-file checkpoint folder until killed
    i += 1
    def write(folder, i=i):
        (folder / "adapter.bin").write_bytes(str(i).encode().ljust(16) * (1 << 16))
        (folder / "meta.json").write_text(str(i))
    replace_folder(sys.argv[1], write)
"""


def _kill_while_writing(script: str, target: Path, kills: int = 5) -> None:
    """Start ``script`` writing ``target`` and SIGKILL it at random moments, ``kills`` times."""
    rng = random.Random()
    for _ in range(kills):
        writer = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True,
                                  cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."})
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def test_when_an_encrypted_file_writer_is_killed_then_a_whole_version_reads_back(tmp_path):
    path = tmp_path / "store.prv"
    write_encrypted(path, b"0".ljust(16) * (2 << 16), Secret.from_key_bytes(KEY))
    for _ in range(5):
        _kill_while_writing(WRITER, path, kills=1)
        data = read_encrypted(path, Secret.from_key_bytes(KEY))  # authenticated: no torn version opens
        assert len(data) == 16 * (2 << 16) and data == data[:16] * (2 << 16)


def test_when_a_ledger_writer_is_killed_then_the_ledger_opens_with_every_completed_release(tmp_path):
    key = LedgerKey.of_store("cd" * 32)
    PrivacyLedger.create(tmp_path / "store.prv", key)
    seen = 0
    for _ in range(4):
        _kill_while_writing(LEDGER_WRITER, tmp_path / "store.prv", kills=1)
        ledger = PrivacyLedger.open(tmp_path / "store.prv", key)  # not rolled back, not torn
        assert len(ledger.history) >= seen and [e["round"] for e in ledger.events] == list(range(1, len(ledger.events) + 1))
        seen = len(ledger.history)
    assert seen > 0


def test_when_a_checkpoint_folder_writer_is_killed_then_a_whole_version_is_found(tmp_path):
    target = tmp_path / "checkpoints" / "last"
    replace_folder(target, lambda folder: _version(folder, 0))
    for _ in range(5):
        _kill_while_writing(FOLDER_WRITER, target, kills=1)
        folder = current_folder(target)  # the new folder, or the old one between the two renames
        assert folder is not None
        version = (folder / "meta.json").read_text()
        assert (folder / "adapter.bin").read_bytes() == version.encode().ljust(16) * (1 << 16)


def _version(folder: Path, i: int) -> None:
    (folder / "adapter.bin").write_bytes(str(i).encode().ljust(16) * (1 << 16))
    (folder / "meta.json").write_text(str(i))


def test_when_a_plain_write_fails_midway_then_the_old_file_stays_and_no_temp_is_left(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "summary.json", '{"old": true}')

    def crash(*args):
        raise KeyboardInterrupt  # as a kill between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, '{"new": true}')
    assert path.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_when_written_private_then_the_file_is_0600_from_the_start(tmp_path):
    assert (atomic_write(tmp_path / "key", b"secret", private=True).stat().st_mode & 0o777) == 0o600
    assert (atomic_write(tmp_path / "public", b"x").stat().st_mode & 0o777) == 0o644
