"""Recommendations on the device, from a run's checkpoint: no server, no network.

``privrec recommend RUN_DIR`` ranks the public catalogue for a user of the device's local store, for
a review history (a JSON-lines file in the review schema, e.g. the user's own reviews) or for a
free-text description of what someone likes (cold start: the text tower needs no interactions).
Items nobody has reviewed are ranked by their metadata through the same item tower. The history's
items are not recommended back. ``--explain`` says why each item is there (``common/explain.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from client.store import LocalStore, pseudonym
from common.config import RunConfig
from common.explain import Explanation
from common.explain import explain as explain_items
from common.schema import Review
from common.split import Split

CHECKPOINTS = ("best", "last")
YOU = "you"  # the one user a history file describes


class RecommendError(ValueError):
    """The run, checkpoint or input cannot give recommendations."""


@dataclass(frozen=True)
class Recommendation:
    rank: int
    item_id: str
    title: str
    category: str
    price: float | None
    score: float
    stars: float | None = None  # predicted rating (released item offsets on the user's own mean)
    why: Explanation | None = None


def recommend(
    run_dir: Path,
    *,
    history: Path | None = None,
    text: str | None = None,
    reviews: list[Review] | None = None,
    k: int = 10,
    checkpoint: str = "best",
    explain: bool = False,
) -> list[Recommendation]:
    """The top ``k`` catalogue items for a ``history`` file, a description ``text`` or ``reviews``
    already in memory (a local store's user, see :func:`store_history`); ``explain`` says why."""
    from common.data import load_dataset
    from common.recommender import Recommender
    from common.run_data import load_catalogue

    if sum(x is not None for x in (history, text, reviews)) != 1:
        raise RecommendError("give exactly one of --history FILE, --text DESCRIPTION and --user ID")
    if text is not None and not text.strip():
        raise RecommendError(
            "the description is empty: say in a few words what you like, e.g. --text 'warm tube amp for blues'"
        )
    if checkpoint not in CHECKPOINTS or k < 1:
        raise RecommendError(f"--checkpoint should be one of {CHECKPOINTS} and --k positive")
    cfg = _run_config(run_dir)
    catalogue = load_catalogue(cfg)
    if history is not None:  # checked before the model loads: a bad file fails fast
        reviews = load_dataset(history, cfg.items_file).reviews
        if not reviews:
            raise RecommendError(f"{history} holds no reviews; give at least one, or use --text")
    reviews = [replace(r, user_id=YOU) for r in reviews or ()]
    recommender = Recommender(cfg, catalogue)
    recommender.load_checkpoint(run_dir / "checkpoints" / checkpoint)
    if text is not None:
        parts = {name: part[0] for name, part in recommender.text_parts([text.strip()]).items()}
    else:
        parts = {name: part[0] for name, part in recommender.score_parts([YOU], Split(train={YOU: reviews})).items()}
    scores = sum(parts.values())
    stars = recommender.predicted_stars(reviews)
    seen = {r.item_id for r in reviews}
    order = [row for row in np.argsort(-scores, kind="stable") if catalogue.ids[row] not in seen][:k]
    whys = (
        explain_items(recommender, order, parts, reviews=reviews, text=text or "") if explain else [None] * len(order)
    )
    items = catalogue.items
    return [
        Recommendation(
            rank=n + 1,
            item_id=catalogue.ids[row],
            title=items[catalogue.ids[row]].title,
            category=", ".join(items[catalogue.ids[row]].categories),
            price=items[catalogue.ids[row]].price,
            score=float(scores[row]),
            stars=None if stars is None else round(float(stars[row]), 2),
            why=why,
        )
        for n, (row, why) in enumerate(zip(order, whys, strict=True))
    ]


def store_history(store: LocalStore, user: str) -> list[Review]:
    """The reviews of ``user`` in a local store: given by the id the store was prepared from (the
    store keeps only its keyed pseudonym) or by that pseudonym."""
    wanted = {user, pseudonym(user, store.metadata.pseudonym_key)}
    reviews = [r for r in store.reviews if r.user_id in wanted]
    if not reviews:
        users = len({r.user_id for r in store.reviews})
        raise RecommendError(
            f"user {user!r} is not in {store.path} ({users} users); give the user id the "
            "store was prepared from, as in the original reviews file"
        )
    return sorted(reviews, key=lambda r: r.timestamp)


def _run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    try:
        return RunConfig.from_mapping(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RecommendError(
            f"{path} is missing: pass the directory of a PrivRec run (it holds config.json and checkpoints/)"
        ) from None
    except ValueError as err:
        raise RecommendError(f"{path} is not a PrivRec run's config ({str(err).split(';')[0]})") from None
