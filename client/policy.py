"""The device owner's privacy policy: what this client will and will not do, whatever the server asks.

The policy is a small TOML file that lives on the device, beside the store
(``<store>.policy.toml``) or where the node config key ``policy`` points. The server never
sends it and cannot change it: the run config only *asks* (``dp``, ``target-epsilon``, ...),
and :meth:`PrivacyPolicy.admit` refuses any run that asks for less privacy than the policy.
Budgets are enforced from the client's ledger (:mod:`client.privacy_ledger`) against this
policy, never against the run config.

Errors: a missing, unreadable, malformed or self-contradictory policy raises
:class:`PolicyError` with one line naming the file, the field, the value and the fix. Nothing
falls back to weaker privacy: absent keys take the strict defaults below.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import records
from common.config import RunConfig, _key, _opt  # one field-with-help convention for both settings
from common.files import atomic_write

log = logging.getLogger(__name__)

POLICY_SUFFIX = ".policy.toml"
ACCOUNTANTS = ("rdp", "prv")


class PolicyError(ValueError):
    """The policy file is missing, unreadable, malformed or contradicts itself."""


class PolicyRefusal(RuntimeError):
    """The run asks for less privacy than the device's policy allows; carries a reply code."""

    def __init__(self, message: str, code: int = records.POLICY_REFUSED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PrivacyPolicy:
    """One device's privacy rules; the defaults are the strict ones a real device starts with."""

    require_dp: bool = _opt(
        True,
        "Refuse training without user-level DP whose noise this device adds "
        "itself (`dp` = 'local' or 'distributed'). 'central' DP is refused too: its "
        "noise is added by the server.",
    )
    epsilon_budget: float = _opt(8.0, "Total epsilon this store may ever spend, over every run.")
    delta: float = _opt(1e-5, "The delta every epsilon of this device is stated at.")
    max_epsilon_per_round: float = _opt(
        8.0, "Refuse a round (or evaluation) that would spend more than this much epsilon by itself."
    )
    accountant: str = _opt("rdp", "Opacus accountant the ledger composes with: 'rdp' or 'prv'.")
    min_users_per_reply: int = _opt(
        10, "Refuse to reply for fewer users than this (decided on the noised count when evaluation is noised)."
    )
    eval_noise_multiplier: float = _opt(
        5.0,
        "Gaussian noise on evaluation sums, in units of one "
        "user's contribution, charged to the ledger; 0 = exact "
        "metrics (only with require-dp = false).",
    )
    assumed_colluders: int = _opt(
        0,
        "Distributed DP: clients this owner assumes collude with the server; "
        "its noise share grows so that the other clients' shares still add up "
        "(the larger of this and the run's `dp-colluders` is used).",
    )
    max_evaluations_per_round: int = _opt(2, "Evaluation queries answered per run and round.")
    max_kdf_memory_mib: int = _opt(
        1024, "Refuse to unlock a store whose header asks for a costlier key derivation than this (memory, MiB)."
    )
    max_kdf_iterations: int = _opt(10, "... or more passes (argon2id iterations, scrypt p) than this.")

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, fix: str) -> None:
            if not ok:
                raise PolicyError(f"policy `{_key(name)}` {fix}, got {getattr(self, name)!r}")

        for name, kind in (("require_dp", bool), ("accountant", str)):
            need(isinstance(getattr(self, name), kind), name, f"should be a {kind.__name__}")
        for name in ("epsilon_budget", "delta", "max_epsilon_per_round", "eval_noise_multiplier"):
            value = getattr(self, name)
            need(
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                name,
                "should be a finite number",
            )
        for name in ("min_users_per_reply", "max_evaluations_per_round", "max_kdf_memory_mib", "max_kdf_iterations"):
            need(type(getattr(self, name)) is int and getattr(self, name) >= 1, name, "should be a positive integer")
        need(
            type(self.assumed_colluders) is int and self.assumed_colluders >= 0,
            "assumed_colluders",
            "should be zero or a positive integer",
        )
        need(self.epsilon_budget > 0, "epsilon_budget", "should be positive")
        need(0 < self.delta < 1, "delta", "should be in (0, 1); 1e-5 or smaller suits most populations")
        need(
            0 < self.max_epsilon_per_round <= self.epsilon_budget,
            "max_epsilon_per_round",
            f"should be positive and at most `epsilon-budget` ({self.epsilon_budget:g})",
        )
        need(self.accountant in ACCOUNTANTS, "accountant", f"should be one of {ACCOUNTANTS}")
        need(self.eval_noise_multiplier >= 0, "eval_noise_multiplier", "should be zero or positive")
        need(
            self.eval_noise_multiplier > 0 or not self.require_dp,
            "eval_noise_multiplier",
            "is 0 (exact evaluation metrics, an un-noised release) but `require-dp` is true; "
            "set a positive noise multiplier or `require-dp = false`",
        )

    # ----- reading and writing ----------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> PrivacyPolicy:
        """The policy in ``path``; raises :class:`PolicyError` (one line) if it cannot be trusted."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PolicyError(
                f"{path}: no privacy policy there; the device owner writes one "
                f"(`privrec client policy --write {path}`) or points node config "
                f"`{records.POLICY}` at it. The client does not train without one"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise PolicyError(
                f"{path}: cannot read the privacy policy ({getattr(err, 'strerror', None) or err}); "
                "check the file and its permissions"
            ) from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise PolicyError(f"{path}: the privacy policy is not valid TOML ({err}); fix the file") from None
        try:
            return cls.from_mapping(values)
        except PolicyError as err:
            raise PolicyError(f"{path}: {err}") from None

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PrivacyPolicy:
        """From kebab-case keys; unknown keys are errors, absent ones take the strict defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k.replace("-", "_") not in fields)
        if unknown:
            raise PolicyError(f"unknown policy key(s) {unknown}; known keys: {sorted(_key(n) for n in fields)}")
        return cls(**{k.replace("-", "_"): v for k, v in values.items()})

    def to_toml(self) -> str:
        """The policy as a commented TOML file."""
        lines = [
            "# PrivRec device privacy policy. Set by the device owner; the server cannot change it.",
            "# The client refuses any run that asks for less privacy than this.",
            "",
        ]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            lines += [f"# {f.metadata['help']}", f"{_key(f.name)} = {shown}"]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the policy to ``path`` atomically; an existing file is kept unless ``force``."""
        path = Path(path)
        if path.exists() and not force:
            raise PolicyError(f"{path} already exists; edit it, or pass --force to replace it")
        try:
            atomic_write(path, self.to_toml())
        except OSError as err:
            raise PolicyError(
                f"cannot write the privacy policy {path}: {err.strerror or err}; "
                "check free space and permissions of its folder"
            ) from None
        return path

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case mapping (for reports and logs)."""
        return {_key(k): v for k, v in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """One line for people: what this device allows."""
        dp = "DP required" if self.require_dp else "DP not required"
        evaluation = (
            f"evaluation noised (x{self.eval_noise_multiplier:g})" if self.eval_noise_multiplier else "exact evaluation"
        )
        return (
            f"{dp}; budget epsilon {self.epsilon_budget:g} at delta {self.delta:g} "
            f"(at most {self.max_epsilon_per_round:g} a round); {evaluation}; at least "
            f"{self.min_users_per_reply} users per reply; {self.max_evaluations_per_round} evaluations "
            "a round"
        )

    # ----- the rule -------------------------------------------------------------------------------
    @property
    def noised_evaluation(self) -> bool:
        """Evaluation replies are Gaussian-noised sums charged to the ledger."""
        return self.eval_noise_multiplier > 0

    def admit(self, cfg: RunConfig) -> None:
        """Raise :class:`PolicyRefusal` if ``cfg`` asks for less privacy than this policy allows."""
        if self.require_dp and cfg.dp not in ("local", "distributed"):
            raise PolicyRefusal(
                f"the run asks for dp = {cfg.dp!r}, but this device's policy requires "
                "user-level DP with noise added on the device (dp = 'local' or 'distributed')"
            )
        if cfg.dp in ("local", "distributed") and cfg.target_epsilon > self.epsilon_budget:
            raise PolicyRefusal(
                f"the run asks for target-epsilon {cfg.target_epsilon:g}, above this "
                f"device's budget of {self.epsilon_budget:g}"
            )


SIMULATED_DEVICE = PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0)
"""What a simulated device allows unless ``privrec simulate --device-policy`` says otherwise:
non-DP training and exact evaluation metrics (a research set-up; see README "Threat model")."""


def policy_path(store: Path) -> Path:
    """The policy file kept beside a store."""
    return store.with_name(store.name + POLICY_SUFFIX)
