"""The README stays a newcomer's page: short, every link and named file present, no placeholder."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_is_short_and_has_no_placeholder():
    assert len(README.splitlines()) <= 300
    assert "<owner>" not in README and "<PATH" not in README
    assert "_SECTION" not in README  # no unfilled part


def test_every_local_link_and_named_file_exists():
    links = re.findall(r"\]\(((?!https?:)[^)#]+)\)", README)
    assert links
    for link in links:
        assert (REPO / link).exists(), link
    for name in set(re.findall(r"`((?:config|docs|libs|benchmarks)/[\w/.-]+\.(?:yaml|md|py))`",
                               README)):
        assert (REPO / name).exists(), name


def test_license_and_citation():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    titles = [reference["title"] for reference in citation["references"]]
    assert any(title.startswith("DeepLab") for title in titles)
    assert any(title.startswith("COCO-Stuff") for title in titles)
