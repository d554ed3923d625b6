"""The run configuration: defaults agree with pyproject.toml; bad values name field and fix."""

import tomllib

import pytest

from common.cli import build_config
from common.config import ConfigError, RunConfig
from tests.conftest import REPO


def test_when_pyproject_defaults_loaded_then_they_equal_the_dataclass_defaults():
    values = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert RunConfig.from_mapping(values) == RunConfig()
    assert set(values) == set(RunConfig().to_dict())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lora-r", 0, "`lora-r` should be a positive integer, got 0"),
        ("fraction-train", 1.5, r"`fraction-train` should be in \(0, 1\]"),
        ("partition", "random", "`partition` should be one of"),
        ("device", "tpu", "`device` should be one of"),
        ("learning-rate", "fast", "`learning-rate` should be of type float"),
        ("num-rounds", 2.5, "`num-rounds` should be of type int"),
        ("temperature", float("nan"), "`temperature` should be a finite number"),
        ("min-train-clients", 9, "`min-train-clients` should be at most `num-clients`"),
        ("no-such-key", 1, "Unknown setting `no-such-key`"),
        ("dp-sample-rate", 0.0, r"`dp-sample-rate` should be in \(0, 1\], got 0.0"),
        ("dp-sample-rate", 1.5, r"`dp-sample-rate` should be in \(0, 1\]"),
        ("target-delta", 0.0, r"`target-delta` should be in \(0, 1\)"),
        ("accountant", "rdp", "Unknown setting `accountant`"),  # the device policy chooses it
        ("dp-train", "lora", "`dp-train` should be one of"),
        ("dp-learning-rate", -0.1, "`dp-learning-rate` should be positive"),
    ],
)
def test_when_setting_is_bad_then_error_names_it(key, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_mapping({key: value})


def test_when_ints_given_for_floats_then_coerced():
    assert RunConfig.from_mapping({"learning-rate": 1}).learning_rate == 1.0


def test_when_cli_sets_values_then_later_sources_win(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('num-rounds = 7\nlearning-rate = 0.01\n')
    cfg = build_config(file, ["num-rounds=9", "partition=dirichlet"], num_clients=4)
    assert (cfg.num_rounds, cfg.learning_rate, cfg.partition, cfg.num_clients) == (9, 0.01, "dirichlet", 4)


def test_when_local_dp_then_its_steps_come_from_public_settings_only():
    from common.recommender import planned_steps

    plain = RunConfig(batch_size=8, dp_sample_rate=0.25, local_epochs=2, dp_local_steps=0)
    private = plain.replace(dp="local")
    assert (planned_steps(143, plain), planned_steps(143, private)) == (2 * 18, 2 * 4)
    assert planned_steps(143, private) == planned_steps(12, private)  # no trace of the client's size
    assert planned_steps(143, private.replace(dp_sample_rate=1.0)) == 2  # every user in every step
    assert planned_steps(143, private.replace(dp_sample_rate=0.3)) == 2 * 4  # ceil(1 / q) steps an epoch
    assert planned_steps(143, private.replace(dp_local_steps=7, local_steps=5)) == 7
    assert planned_steps(143, plain.replace(dp_local_steps=7)) == 2 * 18  # only under local DP


def test_when_dp_trains_item_bias_without_item_table_then_error_names_the_fix():
    with pytest.raises(ConfigError, match="`dp-train` needs `item-embeddings` = true"):
        RunConfig(dp="local", item_embeddings=False)
    assert RunConfig(dp="local", item_embeddings=False, dp_train="all").dp_train == "all"


def test_when_set_lacks_equals_then_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build_config(None, ["num-rounds"])


def test_when_model_path_empty_then_bundled_minilm_is_used():
    assert (RunConfig().model_dir / "config.json").is_file()
