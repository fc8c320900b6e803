"""The README a newcomer reads in two minutes: short, linking every docs page, and giving
the test command CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked
    for target in re.findall(r"\]\(((?:docs|jsqa)/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


def test_ci_runs_the_readme_test_command():
    command = 'pip install torch==2.13.0 && pip install -e ".[train,dev]" && python -m pytest'
    assert command in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command.replace("pip install ", "pip install -q ") in ci


def test_docs_links_lead_to_files():
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), (page.name, target)
