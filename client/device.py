"""One client's on-device state: its encrypted store, the secret that opens it, the owner's
privacy policy and the privacy ledger. Everything here comes from the device (node config and
files), never from the run config the server writes.

In deployment a SuperNode's node config names them: ``store`` plus one of ``key-file``,
``passphrase-file`` or ``passphrase-env``, and optionally ``policy`` (default: the policy file
beside the store). In simulation each simulated device's files are found (and, the first time,
prepared) by :mod:`client.simulated_devices`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from client.encryption import KdfLimits, Secret
from client.local_data import ClientData
from client.policy import PrivacyPolicy, policy_path
from client.privacy_ledger import LedgerKey, PrivacyLedger, open_locked
from client.secrets import resolve_secret
from common import records
from common.config import RunConfig
from common.run_data import load_catalogue

log = logging.getLogger(__name__)


def run_settings(config: RunConfig | None, context: Context) -> RunConfig:
    """The run's settings (``config``, else the run config the server sent), with this node's own
    compute device from its node config (``device``: the owner's machine, not the server's choice)."""
    cfg = config or RunConfig.from_mapping(context.run_config)
    device = context.node_config.get(records.NODE_DEVICE)
    return cfg if device is None or str(device) == cfg.device else cfg.replace(device=str(device))


@dataclass(frozen=True)
class Device:
    """Where this client's data, secret and rules are; :meth:`locate` finds them."""

    store: Path
    secret: Secret
    policy: PrivacyPolicy

    @classmethod
    def locate(cls, cfg: RunConfig, context: Context) -> Device:
        """This node's device: from its node config (deployment) or its simulated device."""
        node = context.node_config
        if records.STORE in node:
            store = Path(str(node[records.STORE]))
            secret = _secret(
                str(node.get(records.KEY_FILE, "")),
                str(node.get(records.PASSPHRASE_FILE, "")),
                str(node.get(records.PASSPHRASE_ENV, "")),
            )
        else:  # imported here: preparing a simulated device needs the anonymiser, a deployed node never does
            from client.simulated_devices import device_files, prepare_simulated_devices

            store, key_file = device_files(cfg, int(node[records.PARTITION_ID]))
            if not store.is_file():
                prepare_simulated_devices(cfg, [int(node[records.PARTITION_ID])], progress=False)
            secret = _secret(str(key_file), "", "")
        policy = PrivacyPolicy.load(str(node.get(records.POLICY, "")) or policy_path(store))
        return cls(store, secret, policy)

    def data(self, cfg: RunConfig) -> ClientData:
        """The decrypted store (cached), refusing key derivations costlier than the policy allows."""
        limits = KdfLimits(max_memory_mib=self.policy.max_kdf_memory_mib, max_iterations=self.policy.max_kdf_iterations)
        return ClientData.load(self.store, self.secret, load_catalogue(cfg), kdf_limits=limits)

    @contextlib.contextmanager
    def ledger(self, data: ClientData) -> Iterator[PrivacyLedger]:
        """The store's privacy ledger, locked for the ``with`` block."""
        with open_locked(self.store, LedgerKey.of_store(data.metadata.pseudonym_key)) as ledger:
            yield ledger


@functools.lru_cache(maxsize=8)
def _secret(key_file: str, passphrase_file: str, passphrase_env: str) -> Secret:
    # One Secret per source and process, so a passphrase's derived key is reused across rounds.
    return resolve_secret(
        key_file=key_file or None, passphrase_file=passphrase_file or None, passphrase_env=passphrase_env or None
    )
