"""benchmarks/results.md sections: each script rewrites its own and keeps the others."""

from common.report_md import replace_section


def test_when_section_written_twice_then_it_is_replaced_not_duplicated(tmp_path):
    path = tmp_path / "results.md"
    replace_section(path, "A", "first")
    replace_section(path, "B", "other")
    replace_section(path, "A", "second")
    text = path.read_text()
    assert text.count("## A") == 1 and "second" in text and "first" not in text
    assert "## B\n\nother" in text
    assert text.index("## A") < text.index("## B")
