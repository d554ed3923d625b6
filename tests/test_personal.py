"""On-device personalisation: item neighbours from the device's own users, never exchanged."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from common.config import ConfigError, RunConfig
from common.personal import CooccurrenceNeighbours, TextNeighbours
from common.recommender import Recommender
from common.run_data import RunData
from common.split import Split


def test_when_items_co_occur_then_their_neighbour_score_is_their_cosine_co_occurrence():
    history = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=float)
    user = np.array([[1.0, 0, 0, 0]])
    scores = CooccurrenceNeighbours(history)(user)[0]
    assert scores[1] == pytest.approx(1.0)  # items 0 and 1 always together
    assert scores[[0, 2, 3]] == pytest.approx([0.0, 0.0, 0.0])  # no self-similarity, no co-occurrence


def test_factorised_neighbours_equal_the_dense_similarity_with_zero_diagonal():
    rng = np.random.default_rng(0)
    history = (rng.random((12, 7)) < 0.3).astype(float)
    history[:, 6] = 0  # an item nobody on the device has
    users = (rng.random((5, 7)) < 0.4).astype(float)
    gram = history.T @ history
    norm = np.sqrt(np.maximum(np.diag(gram), 1.0))
    dense = gram / norm[:, None] / norm[None, :]
    np.fill_diagonal(dense, 0.0)
    assert np.allclose(CooccurrenceNeighbours(history)(users), users @ dense)
    vectors = torch.tensor(rng.normal(size=(7, 3)))
    unit = torch.nn.functional.normalize(vectors, dim=-1).numpy()
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, 0.0)
    assert np.allclose(TextNeighbours(vectors)(users), users @ cosine)


def _split_where_two_items_always_go_together(data: RunData) -> tuple[Split, str, str]:
    """The demo train histories, plus: every user who has item a also has item b (but not the probe user)."""
    users = data.split.users()
    a, b = data.catalogue.ids[0], data.catalogue.ids[1]
    template = data.split.train[users[0]][0]
    train = {}
    for i, user in enumerate(users):
        reviews = [r for r in data.split.train[user] if r.item_id not in (a, b)]
        if i % 3 == 0:
            reviews += [replace(template, user_id=user, item_id=item) for item in (a, b)]
        train[user] = reviews
    probe = users[1]
    train[probe] = [r for r in train[probe] if r.item_id != b] + [replace(template, user_id=probe, item_id=a)]
    return Split(train=train, valid=data.split.valid, test=data.split.test), probe, b


def test_when_the_devices_users_pair_two_items_then_a_user_with_one_gets_the_other_pushed_up(tiny_config):
    data = RunData.load(tiny_config)
    split, probe, paired = _split_where_two_items_always_go_together(data)
    column = data.catalogue.index[paired]
    plain = Recommender(tiny_config.replace(personal_weight=0.0), data.catalogue)
    personal = Recommender(tiny_config.replace(personal_weight=4.0, personal_mix=0.0), data.catalogue)
    personal.load_state(plain.state())
    users = split.users()[:20]
    row = users.index(probe)
    before, after = plain.scores(users, split), personal.scores(users, split)
    assert np.argsort(-after[row]).tolist().index(column) < np.argsort(-before[row]).tolist().index(column)
    neighbours = personal.personal(split).scores(data.catalogue.interactions([split.train[probe]]))[0]
    assert neighbours[column] == neighbours.max()


def test_personalisation_reads_only_training_histories_and_sends_nothing(tiny_config):
    data = RunData.load(tiny_config)
    cfg = tiny_config.replace(personal_weight=2.0)
    recommender = Recommender(cfg, data.catalogue)
    users = data.split.users()[:30]
    scores = recommender.scores(users, data.split)
    # Held-out items differ, histories are the same: the scores must not move.
    shuffled = Split(train=data.split.train, valid={}, test={})
    assert np.allclose(recommender.scores(users, shuffled), scores)
    # What a client sends is the trainable state: the personal part is not in it.
    assert set(recommender.state()) == set(Recommender(tiny_config, data.catalogue).state())


def test_auto_weight_is_the_measured_one_per_dp_mode_and_off_where_unmeasured():
    assert RunConfig().personal_weight == -1 and RunConfig(dp="distributed").neighbour_weight == 4.0
    assert RunConfig(dp="none").neighbour_weight == 0.5
    assert RunConfig(dp="central", num_clients=3).neighbour_weight == RunConfig(dp="local").neighbour_weight == 0.0
    assert RunConfig(dp="none", personal_weight=2.0).neighbour_weight == 2.0


@pytest.mark.parametrize("field, value", [("personal_weight", -2.0), ("personal_mix", 1.5)])
def test_when_personal_settings_are_out_of_range_then_config_error_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "[-_]")):
        RunConfig(**{field: value})
