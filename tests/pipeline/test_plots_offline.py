"""`dvc plots show` offline, from a fresh clone after the set-up's template step (the Makefile's own rule).

The demo's committed metrics are rendered in a copy of the tracked files: every plot dvc.yaml declares has data,
the page loads nothing from a URL (the Vega libraries are inline, the data too), and, where Debian's headless
Chromium is installed (`make browser`), every chart draws its marks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.projects import ENV, ROOT, run

pytestmark = pytest.mark.slow
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The tracked files (with the demo's metrics and report), the template from `make`, the page rendered."""
    folder = tmp_path_factory.mktemp("clone")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    assert not (folder / ".dvc/plots/offline.html").exists(), "the template is generated, never committed"
    run(["git", "init", "-q"], folder)
    venv = Path(sys.executable).parent.parent
    # the Makefile's rule itself; -o: the environment is installed already (never re-run pip from a test)
    env = ENV | {"PYTHONPATH": str(folder / "src")}
    run(["make", "-o", f"{venv}/.installed", f"VENV={venv}", ".dvc/plots/offline.html"], folder, env=env)
    run(["dvc", "plots", "show", "-o", "dvc_plots"], folder)
    (folder / "plots.json").write_text(run(["dvc", "plots", "show", "--json"], folder).stdout)
    return folder


def declared_files(folder: Path) -> list[str]:
    """Every file a dvc.yaml plot names: a file itself, or each file of a folder."""
    files = []
    for entry in yaml.safe_load((folder / "dvc.yaml").read_text())["plots"]:
        path = next(iter(entry)) if isinstance(entry, dict) else entry
        target = folder / path
        files += sorted(p.relative_to(folder).as_posix() for p in target.rglob("*") if p.is_file()) \
            if target.is_dir() else [path]
    return files


def rendered(clone: Path) -> dict[str, list[dict]]:
    return json.loads((clone / "plots.json").read_text())["data"]


def test_every_declared_plot_has_data(clone):
    plots = rendered(clone)
    files = declared_files(clone)
    assert len(files) >= 20 and set(files) == set(plots), set(files) ^ set(plots)
    for name in files:
        (plot,) = plots[name]
        if name.endswith(IMAGE_SUFFIXES):
            assert plot["type"] == "image" and (clone / name).stat().st_size > 0, name
            continue
        data = plot["content"]["data"]
        assert plot["type"] == "vega" and "url" not in data and len(data["values"]) >= 2, name  # inline data
        fields = {key for row in data["values"] for key, value in row.items() if value not in (None, "")}
        assert len(fields - {"rev", "field", "step"}) >= 1, f"{name}: no values to draw"


class _Loads(HTMLParser):
    """Every resource a page would load: script/iframe/img src, link href; and the inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[tuple[str, str]] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for attribute in ("src", "href", "data"):
            if values.get(attribute) and tag in ("script", "img", "iframe", "link", "object", "embed", "source"):
                self.loads.append((tag, values[attribute] or ""))
        if tag == "script" and not values.get("src"):
            self.inline_scripts += 1


def test_the_page_loads_nothing_from_a_url(clone):
    page = (clone / "dvc_plots/index.html").read_text()
    head, body = page[:page.index("<script")], page[page.rindex("</head>"):]  # the inline Vega bundle (between
    parser = _Loads()                                                     # them) quotes HTML of its own
    parser.feed(head + body)
    assert parser.loads and all(tag == "img" for tag, _ in parser.loads), parser.loads
    for _, source in parser.loads:
        assert not re.match(r"[a-z]+:", source) and (clone / "dvc_plots" / source).is_file(), source
    images = sum(name.endswith(IMAGE_SUFFIXES) for name in rendered(clone))
    assert len(parser.loads) == images
    assert "cdn" not in head.lower() and "vegaEmbed" in body
    charts = sum(not name.endswith(IMAGE_SUFFIXES) for name in rendered(clone))
    assert body.count("vegaEmbed('#") + body.count('vegaEmbed("#') == charts, "one embed per chart"
    assert '"url"' not in body  # every chart's data inline, none fetched


@pytest.mark.skipif(not any(shutil.which(name) for name in BROWSERS),
                    reason="no headless Chromium (Debian: `make browser`)")
def test_every_chart_draws_in_headless_chromium(clone):
    browser = next(shutil.which(name) for name in BROWSERS if shutil.which(name))
    page = clone / "dvc_plots" / "index.html"
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    charts = re.split(r'<div[^>]*class="vega-embed', dom[dom.rindex("<body"):])[1:]
    names = [name for name in rendered(clone) if not name.endswith(IMAGE_SUFFIXES)]
    assert len(charts) == len(names), f"{len(charts)} charts embedded, {len(names)} declared"
    for name, chart in zip(names, charts, strict=True):
        marks = re.findall(r'<path[^>]*aria-roledescription="(line mark|bar|area mark|point)"[^>]*d="M', chart)
        assert marks, f"{name}: the chart drew no line or bar"
