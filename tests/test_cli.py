"""The privrec command: --help everywhere, one-line errors with a non-zero exit."""

import pytest
from typer.testing import CliRunner

from common.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["simulate"], ["recommend"], ["audit"], ["baselines"], ["config"], ["data"], ["data", "check"],
                                  ["client"], ["client", "prepare"], ["client", "inspect"], ["client", "audit"], ["client", "policy"],
                                  ["client", "change-passphrase"], ["client", "new-key"]])
def test_when_help_asked_then_every_command_explains_itself(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_when_data_is_checked_then_statistics_are_shown():
    result = runner.invoke(app, ["data", "check", "--clients", "4"])
    assert result.exit_code == 0, result.output
    assert "300 / 200" in result.output and "75, 75, 75, 75" in result.output


def test_when_data_file_is_missing_then_one_line_error(tmp_path):
    result = runner.invoke(app, ["data", "check", "--data", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "error:" in result.output and "nope.jsonl" in result.output
    assert "Traceback" not in result.output


def test_when_data_is_malformed_then_error_names_file_and_line(tmp_path):
    bad = tmp_path / "reviews.jsonl"
    bad.write_text('{"user_id": "u", "item_id": "D0001", "rating": 9, "timestamp": 1}\n')
    result = runner.invoke(app, ["data", "check", "--data", str(bad)])
    assert result.exit_code == 2
    assert "reviews.jsonl:1" in result.output.replace("\n", "") and "rating" in result.output


def test_when_setting_is_invalid_then_simulate_refuses_before_starting():
    result = runner.invoke(app, ["simulate", "--set", "lora-r=0"])
    assert result.exit_code == 2
    assert "`lora-r` should be a positive integer, got 0." in result.output


def test_when_device_policy_is_bad_then_simulate_refuses_before_starting(tmp_path):
    policy = tmp_path / "strict.toml"
    policy.write_text("require-dp = true\neval-noise-multiplier = 0.0\n")
    result = runner.invoke(app, ["simulate", "--device-policy", str(policy)])
    assert result.exit_code == 2
    assert "`eval-noise-multiplier` is 0" in result.output.replace("\n", "") and "Traceback" not in result.output
    result = runner.invoke(app, ["simulate", "--device-policy", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "no privacy policy there" in result.output.replace("\n", "")


def test_when_client_policy_written_then_shown_and_checked(tmp_path):
    path = tmp_path / "me.prv.policy.toml"
    written = runner.invoke(app, ["client", "policy", str(path), "--write"])
    assert written.exit_code == 0, written.output
    assert "DP required" in written.output and path.is_file()
    again = runner.invoke(app, ["client", "policy", str(path), "--write"])
    assert again.exit_code == 2 and "already exists" in again.output.replace("\n", "")
    path.write_text("epsilon-budget = -3.0\n")
    shown = runner.invoke(app, ["client", "policy", str(path)])
    assert shown.exit_code == 2 and "`epsilon-budget` should be positive" in shown.output.replace("\n", "")


def test_when_an_unexpected_error_happens_then_one_line_names_only_its_type(monkeypatch, capsys):
    import common.cli

    def boom(*args, **kwargs):
        raise KeyError("Quinn Harlow wrote: my address is 12 Elm Street")

    monkeypatch.setattr(common.cli, "app", boom)
    monkeypatch.delenv("PRIVREC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        common.cli.main()
    printed = capsys.readouterr()
    assert exited.value.code == 1
    assert "unexpected KeyError" in printed.err and "Quinn" not in printed.err + printed.out


def test_when_config_listed_then_every_setting_appears():
    result = runner.invoke(app, ["config", "--set", "num-rounds=7"])
    assert result.exit_code == 0
    assert "num-rounds" in result.output and "7" in result.output and "max-profile-tokens" in result.output


def test_when_baselines_run_then_popularity_and_ease_are_printed():
    result = runner.invoke(app, ["baselines"])
    assert result.exit_code == 0, result.output
    assert "popularity" in result.output and "EASE" in result.output


def test_when_a_simulation_finishes_then_popularity_is_printed_beside_the_model(tmp_path, monkeypatch):
    """The main job's table: the model's test metrics and popularity's on the same split."""
    import json

    import server.simulation
    from common.baselines import popularity
    from common.config import RunConfig
    from common.run_data import RunData

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"best-round": 1, "federation-epsilon": 8.0, "test": {
        "hr@10": 0.5, "ndcg@10": 0.25, "mrr": 0.2, "num-users": 300.0}}))
    monkeypatch.setattr(server.simulation, "simulate", lambda cfg, **kwargs: run)
    result = runner.invoke(app, ["simulate"])
    assert result.exit_code == 0, result.output
    expected = popularity(RunData.load(RunConfig()), k=10)
    row = next(line for line in result.stdout.splitlines() if "popularity" in line and "0." in line)
    assert f"{expected['ndcg@10']:.4f}" in row and f"{expected['hr@10']:.4f}" in row
    assert "PrivRec" in result.stdout and "0.2500" in result.stdout


def test_when_no_round_was_trained_then_simulate_says_why_in_one_line_and_exits_2(monkeypatch):
    import server.simulation
    from server.outcome import RunFailed

    def failed(cfg, **kwargs):
        raise RunFailed("no round was trained in 3 round(s): clients declined 15 time(s), failed 0, ...")

    monkeypatch.setattr(server.simulation, "simulate", failed)
    result = runner.invoke(app, ["simulate"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no round was trained") and "Test metrics" not in result.output


def test_when_data_is_split_then_each_device_gets_its_partitions_users_and_nothing_is_overwritten(tmp_path):
    import gzip
    import json

    from common.config import RunConfig
    from common.run_data import RunData

    result = runner.invoke(app, ["data", "split", str(tmp_path), "--clients", "3"])
    assert result.exit_code == 0, result.output
    users = []
    for k in range(3):
        with gzip.open(tmp_path / f"client-{k}.jsonl.gz", "rt") as handle:
            users.append({json.loads(line)["user_id"] for line in handle})
    cfg = RunConfig(num_clients=3)
    data = RunData.load(cfg)
    assert users == [set(data.client_users(cfg, k)) for k in range(3)]  # as the simulation partitions
    again = runner.invoke(app, ["data", "split", str(tmp_path), "--clients", "3"])
    assert again.exit_code == 2 and "already exists; pass --force" in again.output
