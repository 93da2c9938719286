"""The documentation site: the configuration page is the settings model's, the event catalogue
and the runbooks cover every event type and alert, no page links outside the repository, and the
built site (``mkdocs build --strict``) has every page and no broken anchor."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from scanner.config import WEBHOOK_EVENTS
from scanner.config_reference import render

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS = Path(sys.executable).with_name("mkdocs")


def _nav() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text("utf-8"), Loader=yaml.Loader)
    return [next(iter(item.values())) for item in config["nav"]]


def test_the_configuration_page_is_the_settings_model() -> None:
    """Regenerate with ``python -m scanner.config_reference > docs/configuration.md``."""
    assert (DOCS / "configuration.md").read_text("utf-8") == render()


def test_every_event_type_and_every_alert_is_documented() -> None:
    gateway = (DOCS / "gateway.md").read_text("utf-8")
    catalogue = gateway[gateway.index("## Event catalogue") :]
    listed = re.findall(r"^\| `([a-z_]+)` \|", catalogue, flags=re.M)
    assert sorted(listed) == sorted(WEBHOOK_EVENTS)
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus-alerts.yml").read_text("utf-8"))
    alerts = [r["alert"] for group in rules["groups"] for r in group["rules"]]
    runbooks = re.findall(r"^### (\w+)$", (DOCS / "monitoring.md").read_text("utf-8"), re.M)
    assert runbooks == alerts


def test_no_page_links_outside_the_repository() -> None:
    for page in DOCS.glob("*.md"):
        text = page.read_text("utf-8")
        assert "../" not in text, page.name
        assert not re.search(r"\b[Ii]ssues? [0-9]+\b", text), page.name


SOURCES = ("scanner", "tests", "bench", "docs", "config", "monitoring", "systemd", "migrations")
TEXT = {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".ini", ".sh", ".json", ".service"}


def test_no_file_names_a_document_outside_the_repository() -> None:
    """Docstrings, comments and pages cite documents the repository has (``docs/design.md``,
    ``docs/providers.md``), never a sibling folder's ``DESIGN.md`` or ``PROVIDER-LIMITS.md``."""
    files = [p for d in SOURCES for p in (ROOT / d).rglob("*") if p.suffix in TEXT]
    files += [p for p in ROOT.iterdir() if p.is_file() and p.suffix in TEXT | {""}]
    have = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    cited: dict[str, str] = {}
    for path in files:
        if ".venv" in path.parts or "__pycache__" in path.parts or path == Path(__file__):
            continue  # this file names what it looks for
        text = path.read_text("utf-8", errors="replace")
        assert "../shared" not in text, path
        for name in re.findall(r"\b[A-Z][A-Z0-9_-]*\.md\b", text):
            cited.setdefault(name, str(path.relative_to(ROOT)))
    assert {n: where for n, where in cited.items() if n not in have} == {}


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        href = found.get("href")
        if tag == "a" and href and not href.startswith(("http:", "https:", "mailto:")):
            self.links.append(href)


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed (the test extra)")
def test_the_built_site_has_every_page_and_no_broken_anchor(tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert built.returncode == 0, built.stderr
    pages = {}
    for name in _nav():
        html = site / ("index.html" if name == "index.md" else f"{name[:-3]}/index.html")
        assert html.is_file(), name
        parsed = _Anchors()
        parsed.feed(html.read_text("utf-8"))
        pages[html.resolve()] = parsed
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(_nav())  # no orphan page
    for html, parsed in pages.items():
        for href in parsed.links:
            target, _, anchor = href.partition("#")
            if not anchor:
                continue
            path = html if not target else (html.parent / target).resolve()
            if path.is_dir():
                path = path / "index.html"
            assert path in pages, (html, href)
            assert anchor in pages[path].ids, (html, href)
    shutil.rmtree(site)
