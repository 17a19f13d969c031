"""The documentation site: it builds with --strict, every internal link and image resolves, every
CLI command and flag is in the generated reference with its meaning, and the README stays short.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from probekit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


class _Links(HTMLParser):
    """Every href / src of a page, and the ids it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("href", "src") and value and tag in ("a", "img", "link", "script", "source"):
                self.targets.append(value)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parser


def test_site_builds_and_every_internal_link_and_image_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 15
    parsed = {page: _parse(page) for page in pages if "figures" not in page.relative_to(site).parts}
    broken, images = [], set()
    for page, links in parsed.items():
        for target in links.targets:
            parts = urlsplit(target)
            if parts.scheme or target.startswith(("//", "data:", "mailto:", "javascript:")):
                continue
            base = site if parts.path.startswith("/") else page.parent  # 404.html links from the site root
            path = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else page
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file() or site.resolve() not in path.parents and path != site.resolve():
                broken.append(f"{page.relative_to(site)} -> {target}")
                continue
            if path.suffix == ".png":
                images.add(path)
            if parts.fragment and path.suffix == ".html" and path in parsed and parts.fragment not in parsed[path].ids:
                broken.append(f"{page.relative_to(site)} -> {target} (no such anchor)")
    assert not broken, "\n".join(broken)
    # the figures the pages show are real PNGs in the site
    assert len(images) >= 8 and all(i.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_flag_is_in_the_cli_reference_with_its_meaning(site):
    page = (site / "reference" / "cli" / "index.html").read_text()
    parser = build_parser()
    assert "--debug" in page
    sections = re.split(r'<h2 id="', page)
    by_command = {s.split('"', 1)[0]: s for s in sections[1:]}
    for name, command in _subcommands(parser).items():
        assert name in by_command, f"command {name} is missing from the CLI reference"
        rows = re.findall(r"<tr>(.*?)</tr>", by_command[name], flags=re.S)
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings or [action.metavar or action.dest]:
                row = next((r for r in rows if f"<code>{flag}</code>" in r), None)
                assert row is not None, f"`probekit {name} {flag}` is missing from the CLI reference"
                assert action.help, f"`probekit {name} {flag}` has no help text: add help= to its add_argument"
                meaning = html.unescape(re.sub(r"<[^>]+>", "", re.findall(r"<td>(.*?)</td>", row, flags=re.S)[-1]))
                words = action.help.replace("%%", "%").replace("`", "").split()[:4]
                assert meaning.split()[: len(words)] == words, (name, flag)


def test_readme_is_a_short_landing_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for heading in ("## Install", "## Quickstart", "## Cite", "## License"):
        assert heading in readme, heading
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets
    for target in targets:
        if urlsplit(target).scheme:
            continue
        assert (ROOT / unquote(urlsplit(target).path)).exists(), target


def test_the_api_reference_names_every_public_export():
    import probekit

    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    documented = set(re.findall(r"^::: probekit\.(\w+)$", page, flags=re.M))
    assert documented == set(probekit.__all__) - {"__version__"}


def test_the_release_is_the_same_in_the_package_citation_readme_and_changelog():
    """One release number, read independently from each file that states it."""
    import re

    import yaml

    from probekit._version import RELEASE, __version__

    root = Path(__file__).resolve().parents[1]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    readme = re.search(r"@software\{probekit,.*?version = \{([^}]+)\}", (root / "README.md").read_text(), re.S)
    changelog = re.findall(r"^## (\d+\.\d+\.\d+) ", (root / "CHANGELOG.md").read_text(), re.M)
    assert str(citation["version"]) == readme.group(1) == changelog[0] == RELEASE
    assert __version__.split("+")[0] == RELEASE
    assert re.fullmatch(r"\d+\.\d+\.\d+(\+g[0-9a-f]{7,}(\.dirty)?)?", __version__), __version__
