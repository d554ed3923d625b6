"""Recommendations on the device, from a run's checkpoint: no server, no network.

``privrec recommend RUN_DIR`` ranks the public catalogue for a review history (a JSON-lines file in
the review schema, e.g. the user's own reviews) or for a free-text description of what someone
likes (cold start: the text tower needs no interactions). Items nobody has reviewed are ranked by
their metadata through the same item tower. The history's items are not recommended back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.config import RunConfig
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


def recommend(run_dir: Path, *, history: Path | None = None, text: str | None = None, k: int = 10,
              checkpoint: str = "best") -> list[Recommendation]:
    """The top ``k`` catalogue items for ``history`` (reviews file) or ``text`` (a description)."""
    from common.data import load_dataset
    from common.recommender import Recommender
    from common.run_data import load_catalogue

    if (history is None) == (text is None):
        raise RecommendError("give exactly one of --history FILE and --text DESCRIPTION")
    if text is not None and not text.strip():
        raise RecommendError("the description is empty: say in a few words what you like, e.g. --text "
                             "'warm tube amp for blues'")
    if checkpoint not in CHECKPOINTS or k < 1:
        raise RecommendError(f"--checkpoint should be one of {CHECKPOINTS} and --k positive")
    cfg = _run_config(run_dir)
    catalogue = load_catalogue(cfg)
    reviews = []
    if history is not None:  # checked before the model loads: a bad file fails fast
        reviews = [replace(r, user_id=YOU) for r in load_dataset(history, cfg.items_file).reviews]
        if not reviews:
            raise RecommendError(f"{history} holds no reviews; give at least one, or use --text")
    recommender = Recommender(cfg, catalogue)
    recommender.load_checkpoint(run_dir / "checkpoints" / checkpoint)
    if text is not None:
        scores, seen = recommender.text_scores([text.strip()])[0], set()
    else:
        scores = recommender.scores([YOU], Split(train={YOU: reviews}))[0]
        seen = {r.item_id for r in reviews}
    order = [row for row in np.argsort(-scores, kind="stable") if catalogue.ids[row] not in seen][:k]
    items = catalogue.items
    return [Recommendation(rank=n + 1, item_id=catalogue.ids[row], title=items[catalogue.ids[row]].title,
                           category=", ".join(items[catalogue.ids[row]].categories),
                           price=items[catalogue.ids[row]].price, score=float(scores[row]))
            for n, row in enumerate(order)]


def _run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    try:
        return RunConfig.from_mapping(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RecommendError(f"{path} is missing: pass the directory of a PrivRec run (it holds config.json "
                             "and checkpoints/)") from None
    except ValueError as err:
        raise RecommendError(f"{path} is not a PrivRec run's config ({str(err).split(';')[0]})") from None
