"""privrec recommend: top-K from a run's checkpoint on this machine, for a history or a description."""

import json

import pytest
from typer.testing import CliRunner

from common.cli import app
from common.config import DEMO_DATA_DIR
from common.model import build_model, save_checkpoint
from common.run_data import load_catalogue

runner = CliRunner()


def _run(tiny_config, tmp_path, num_items=None):
    """A run directory as the server writes it: its config and a checkpoint."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(tiny_config.to_dict()))
    model = build_model(tiny_config, num_items=num_items or len(load_catalogue(tiny_config)))
    save_checkpoint(model, run / "checkpoints" / "best", meta={"round": 0})
    return run


def _history(tmp_path, rows):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_description_gets_k_items_best_first(tiny_config, tmp_path):
    run = _run(tiny_config, tmp_path)
    result = runner.invoke(app, ["recommend", str(run), "--text", "hickory drum sticks for jazz", "--k", "5", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5]
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert set(load_catalogue(tiny_config).ids) >= {i["item_id"] for i in items}
    table = runner.invoke(app, ["recommend", str(run), "--text", "hickory drum sticks for jazz"])
    assert table.exit_code == 0 and "Top 10" in table.output


def test_a_history_gets_items_it_has_not_reviewed(tiny_config, tmp_path):
    run = _run(tiny_config, tmp_path)
    rows = [json.loads(line) for line in (DEMO_DATA_DIR / "reviews.jsonl").read_text().splitlines()[:6]]
    result = runner.invoke(app, ["recommend", str(run), "--history", str(_history(tmp_path, rows)), "--k", "8", "--json"])
    assert result.exit_code == 0, result.output
    shown = {i["item_id"] for i in json.loads(result.stdout)}
    assert len(shown) == 8 and not shown & {r["item_id"] for r in rows}


@pytest.mark.parametrize("case, named", [
    ("empty", "description is empty"), ("unknown-item", "mine.jsonl"), ("other-catalogue", "another catalogue"),
    ("no-run", "is missing: pass the directory"), ("both", "exactly one of")])
def test_bad_input_gets_one_line_naming_it(tiny_config, tmp_path, case, named):
    run = _run(tiny_config, tmp_path, num_items=7 if case == "other-catalogue" else None)
    args = ["recommend", str(run), "--text", "guitar strings"]
    if case == "empty":
        args = ["recommend", str(run), "--text", "   "]
    elif case == "unknown-item":
        row = {"user_id": "me", "item_id": "NOT-AN-ITEM", "rating": 5, "timestamp": 1, "summary": "s", "review_text": "t"}
        args = ["recommend", str(run), "--history", str(_history(tmp_path, [row]))]
    elif case == "no-run":
        args = ["recommend", str(tmp_path / "nowhere"), "--text", "guitar strings"]
    elif case == "both":
        args += ["--history", str(_history(tmp_path, []))]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and named in " ".join(result.stdout.split() + result.stderr.split()), result.output
    assert "Traceback" not in result.output


def test_a_user_of_the_local_store_gets_items_they_have_not_reviewed(tiny_config, tmp_path, make_device):
    from common import records

    device = make_device(users=3)
    run = _run(tiny_config, tmp_path)
    rows = [json.loads(line) for line in (DEMO_DATA_DIR / "reviews.jsonl").read_text().splitlines()]
    user = sorted({r["user_id"] for r in rows})[0]
    args = ["recommend", str(run), "--store", device[records.STORE], "--key-file", device[records.KEY_FILE]]
    result = runner.invoke(app, args + ["--user", user, "--json"])
    assert result.exit_code == 0, result.output
    shown = {i["item_id"] for i in json.loads(result.stdout)}
    assert len(shown) == 10 and not shown & {r["item_id"] for r in rows if r["user_id"] == user}
    unknown = runner.invoke(app, args + ["--user", "U9999"])
    said = " ".join(unknown.output.split())  # the console wraps the one line at 80 columns here
    assert unknown.exit_code == 2 and said.startswith("error:") and "'U9999' is not in" in said and "3 users" in said
    lonely = runner.invoke(app, ["recommend", str(run), "--user", user])
    assert lonely.exit_code == 2 and "--user and --store go together" in lonely.output


def test_explanations_add_up_to_the_score_and_name_the_matching_attributes(tiny_config, tmp_path):
    run = _run(tiny_config, tmp_path)
    rows = [json.loads(line) for line in (DEMO_DATA_DIR / "reviews.jsonl").read_text().splitlines()[:6]]
    result = runner.invoke(app, ["recommend", str(run), "--history", str(_history(tmp_path, rows)), "--k", "5",
                                 "--json", "--explain"])
    assert result.exit_code == 0, result.output
    catalogue = load_catalogue(tiny_config)
    mine = {catalogue.items[r["item_id"]].categories[0] for r in rows}
    for item in json.loads(result.stdout):
        why = item["why"]
        assert sum(why["parts"].values()) == pytest.approx(item["score"], rel=1e-5)
        assert why["sentences"] and all(-1 <= s <= 1 for _, s in why["sentences"])
        category = catalogue.items[item["item_id"]].categories[0]
        assert any(f"category {category}" in a for a in why["attributes"]) == (category in mine)
        assert why["like"] in {catalogue.items[r["item_id"]].title for r in rows}
    table = runner.invoke(app, ["recommend", str(run), "--text", "strings for my ukulele", "--k", "2", "--explain"])
    assert table.exit_code == 0 and 'your words: "strings for my ukulele"' in table.output


def test_the_top_explanation_of_a_drum_item_for_a_drummer_cites_a_drum_sentence(tmp_path):
    """With the real default model (zero-shot): a history of drum reviews whose sentences also talk
    about delivery and service; what a drum item is explained by must be a drum sentence."""
    from common.config import RunConfig

    cfg = RunConfig(run_dir=str(tmp_path))
    run = _run(cfg, tmp_path)
    drums = ["These maple drum sticks give a crisp rebound on the snare.", "The hickory sticks survive heavy "
             "drumming on my cymbals.", "Nylon tips sound bright on the ride cymbal and the toms."]
    other = ["The parcel arrived on a rainy Tuesday afternoon.", "Customer service answered my email within "
             "an hour.", "My neighbour says the box colour looks odd."]
    rows = [{"user_id": "me", "item_id": item, "rating": 5, "timestamp": n, "summary": "Happy",
             "review_text": f"{other[n]} {drums[n]}"} for n, item in enumerate(["D0002", "D0012", "D0022"])]
    result = runner.invoke(app, ["recommend", str(run), "--history", str(_history(tmp_path, rows)), "--k", "10",
                                 "--json", "--explain"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    catalogue = load_catalogue(cfg)
    drum_items = [i for i in items if catalogue.items[i["item_id"]].categories == ("Drum Sticks",)]
    assert drum_items, "a drummer's top 10 should hold drum sticks"
    for item in drum_items:
        assert item["why"]["sentences"][0][0] in drums, item
