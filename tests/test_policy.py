"""The device owner's privacy policy: read strictly, refuse what it must, never fall back silently."""

from __future__ import annotations

import pytest

from client.policy import SIMULATED_DEVICE, PolicyError, PolicyRefusal, PrivacyPolicy, policy_path
from common import records
from common.config import RunConfig


def test_when_written_then_it_reads_back_the_same(tmp_path):
    policy = PrivacyPolicy(epsilon_budget=3.0, max_epsilon_per_round=1.0, min_users_per_reply=25)
    path = policy.write(tmp_path / "p.toml")
    assert PrivacyPolicy.load(path) == policy
    assert "# Total epsilon this store may ever spend" in path.read_text()  # the owner can read it


def test_when_a_key_is_absent_then_the_strict_default_applies(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("epsilon-budget = 2.0\nmax-epsilon-per-round = 2.0\n")
    policy = PrivacyPolicy.load(path)
    assert policy.require_dp and policy.eval_noise_multiplier == PrivacyPolicy().eval_noise_multiplier


@pytest.mark.parametrize(("text", "message"), [
    (None, r"no privacy policy there; .*does not train without one"),
    ("require-dp = yes", "not valid TOML"),
    ("require-dp = 1", "policy `require-dp` should be a bool, got 1"),
    ("epsilon-budget = -1.0", "policy `epsilon-budget` should be positive, got -1.0"),
    ("epsilon-budget = 'lots'", "policy `epsilon-budget` should be a finite number, got 'lots'"),
    ("delta = 0.5e1", r"policy `delta` should be in \(0, 1\)"),
    ("max-epsilon-per-round = 9.0", r"policy `max-epsilon-per-round` should be positive and at most `epsilon-budget` \(8\)"),
    ("min-users-per-reply = 0", "policy `min-users-per-reply` should be a positive integer, got 0"),
    ("max-kdf-iterations = 2.5", "policy `max-kdf-iterations` should be a positive integer"),
    ("accountant = 'gdp'", "policy `accountant` should be one of"),
    ("eval-noise-multiplier = 0.0", "`eval-noise-multiplier` is 0 .* but `require-dp` is true"),
    ("epsilon = 8.0", r"unknown policy key\(s\) \['epsilon'\]"),
])
def test_when_policy_is_missing_malformed_or_contradictory_then_one_line_names_the_field(tmp_path, text, message):
    path = tmp_path / "device.prv.policy.toml"
    if text is not None:
        path.write_text(text + "\n")
    with pytest.raises(PolicyError, match=message) as refused:
        PrivacyPolicy.load(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_when_policy_is_unreadable_then_one_line_error(tmp_path):
    folder = tmp_path / "device.prv.policy.toml"
    folder.mkdir()  # a folder where the file should be
    with pytest.raises(PolicyError, match="cannot read the privacy policy"):
        PrivacyPolicy.load(folder)


def test_when_policy_exists_then_write_keeps_it_unless_forced(tmp_path):
    path = PrivacyPolicy(epsilon_budget=1.0, max_epsilon_per_round=1.0).write(tmp_path / "p.toml")
    with pytest.raises(PolicyError, match="already exists"):
        PrivacyPolicy().write(path)
    assert PrivacyPolicy.load(path).epsilon_budget == 1.0
    PrivacyPolicy().write(path, force=True)
    assert PrivacyPolicy.load(path).epsilon_budget == 8.0


@pytest.mark.parametrize(("run", "admitted"), [
    (RunConfig(dp="local"), True),
    (RunConfig(dp="local", target_epsilon=4.0), True),
    (RunConfig(dp="local", target_epsilon=8.5), False),
    (RunConfig(dp="none"), False),
    (RunConfig(dp="central"), False),
])
def test_when_run_asks_for_less_than_the_strict_policy_then_refused(run, admitted):
    if admitted:
        PrivacyPolicy().admit(run)
    else:
        with pytest.raises(PolicyRefusal) as refused:
            PrivacyPolicy().admit(run)
        assert refused.value.code == records.POLICY_REFUSED


def test_simulated_devices_allow_research_runs_and_say_so():
    SIMULATED_DEVICE.admit(RunConfig())
    assert "DP not required" in SIMULATED_DEVICE.describe() and "exact evaluation" in SIMULATED_DEVICE.describe()


def test_policy_file_lives_beside_its_store(tmp_path):
    assert policy_path(tmp_path / "me.prv") == tmp_path / "me.prv.policy.toml"
