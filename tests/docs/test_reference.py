"""The generated reference pages match the code."""

from tre import docs


def test_generated_reference_pages_are_current():
    stale = docs.stale_pages()
    assert not stale, f"stale generated docs {stale}: run `make docs`"


def test_a_changed_page_is_detected(tmp_path):
    docs.write_pages(tmp_path)
    assert docs.stale_pages(tmp_path) == []
    page = tmp_path / "reference" / "settings.md"
    page.write_text(page.read_text().replace("TRE_HOME", "TRE_HOUSE"))
    assert docs.stale_pages(tmp_path) == ["reference/settings.md"]
