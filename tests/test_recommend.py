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
