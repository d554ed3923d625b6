"""The privrec command: --help everywhere, one-line errors with a non-zero exit."""

import pytest
from typer.testing import CliRunner

from common.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["simulate"], ["baselines"], ["config"], ["data"], ["data", "check"]])
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


def test_when_config_listed_then_every_setting_appears():
    result = runner.invoke(app, ["config", "--set", "num-rounds=7"])
    assert result.exit_code == 0
    assert "num-rounds" in result.output and "7" in result.output and "max-profile-tokens" in result.output


def test_when_baselines_run_then_popularity_and_ease_are_printed():
    result = runner.invoke(app, ["baselines"])
    assert result.exit_code == 0, result.output
    assert "popularity" in result.output and "EASE" in result.output
