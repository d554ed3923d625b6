"""Fused personalisation dimensions: rating-aware histories, attribute preferences, the score's parts."""

import numpy as np
import pytest

from common.catalogue import Catalogue
from common.fusion import AttributePreferences, history_matrix, profile_reviews
from common.recommender import Recommender
from common.run_data import RunData
from common.schema import Item, Review

CATALOGUE = Catalogue({
    "a": Item("a", "Maple drum sticks", ("Drum Sticks",), 5.0, "Zanvora"),
    "b": Item("b", "Hickory drum sticks", ("Drum Sticks",), 7.0, "Quillstone"),
    "c": Item("c", "Bronze guitar strings", ("Guitar Strings",), 9.0, "Corvessa"),
    "d": Item("d", "Nickel guitar strings", ("Guitar Strings",), 30.0, "Corvessa"),
    "e": Item("e", "Condenser microphone", ("Microphones",), 120.0, "Zanvora"),
    "f": Item("f", "Dynamic microphone", ("Microphones",), None),
})


def _review(item, stars, text="fine"):
    return Review("u", item, stars, 0, "s", text)


def test_a_low_rating_counts_what_low_rating_weight_says():
    reviews = [_review("a", 5), _review("c", 1)]
    assert history_matrix(CATALOGUE, [reviews], 1.0)[0].tolist() == [1, 0, 1, 0, 0, 0]
    assert history_matrix(CATALOGUE, [reviews], -1.0)[0].tolist() == [1, 0, -1, 0, 0, 0]
    assert profile_reviews(reviews, 0.5) == reviews
    assert profile_reviews(reviews, 0.0) == reviews[:1]
    assert profile_reviews(reviews[1:], -1.0) == reviews[1:]  # never an empty profile


def test_a_one_star_review_does_not_pull_its_category_up():
    prefs = AttributePreferences(CATALOGUE)
    reviews = [_review("a", 5), _review("c", 1)]
    counted = prefs.scores(history_matrix(CATALOGUE, [reviews], 1.0))[0]
    against = prefs.scores(history_matrix(CATALOGUE, [reviews], -1.0))[0]
    row = CATALOGUE.index
    assert counted[row["d"]] > counted[row["f"]]  # the strings' category and brand count as liked
    assert against[row["d"]] < against[row["f"]] < against[row["b"]]  # ... or against


def test_attribute_preferences_follow_category_brand_and_price_band():
    prefs = AttributePreferences(CATALOGUE)
    assert [f.name for f in prefs.facets] == ["category", "brand", "price band"]
    assert prefs.band(5.0) != prefs.band(120.0) and prefs.band(120.0).endswith("+")
    history = history_matrix(CATALOGUE, [[_review("a", 5)]])
    scores = prefs.scores(history)[0]
    row = CATALOGUE.index
    assert scores[row["b"]] > scores[row["c"]]  # same category (and price band) as the drum sticks
    assert scores[row["e"]] > scores[row["f"]]  # same brand
    matches = prefs.matches(history[0], row["b"])
    assert ("category", "Drum Sticks", 1.0, 1) in matches
    assert not [m for m in matches if m[0] == "brand"]  # Quillstone is not the user's brand
    no_brands = AttributePreferences(Catalogue({"x": Item("x", "t", ("C",), None), "y": Item("y", "u", ("D",), None)}))
    assert [f.name for f in no_brands.facets] == ["category"]


def test_the_parts_add_up_to_the_score_and_each_weight_switches_its_part(tiny_config):
    data = RunData.load(tiny_config)
    users = data.split.users()[:12]
    plain = Recommender(tiny_config.replace(personal_weight=0.0), data.catalogue)
    fused = Recommender(tiny_config.replace(personal_weight=1.0, attribute_weight=2.0), data.catalogue)
    fused.load_state(plain.state())
    assert set(plain.score_parts(users, data.split)) == {"text", "prior"}
    parts = fused.score_parts(users, data.split)
    assert set(parts) == {"text", "prior", "neighbours", "attributes"}
    np.testing.assert_allclose(sum(parts.values()), fused.scores(users, data.split))
    np.testing.assert_allclose(parts["text"], plain.score_parts(users, data.split)["text"])
    assert parts["attributes"].std() == pytest.approx(2.0)
