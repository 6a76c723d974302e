"""README.md and docs/*.md: every relative link resolves, and every command they show names what exists.

The commands checked are the ones a reader copies: `dvc exp run -S key=value` (the key is in params.yaml), `dvc
repro <stage>` (the stage is in dvc.yaml), `make <target>` (the target is in the Makefile) and `aligned-forensics
...` (the console command's own parser accepts the line). Nothing is run.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest
import yaml

from aligned_forensics import commands
from tests.conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`]+)`")  # inline code may wrap onto the next line
LINK = re.compile(r"\[[^\]\n]*\]\(([^()\s]+)\)")  # [text](target)
STARTS = (("dvc", "exp", "run"), ("dvc", "repro"), ("make",), ("aligned-forensics",))
SEPARATORS = {"&&", "||", ";", "|"}
PLACEHOLDER = "…"  # `dvc exp run -S …` in prose: any key


def doc_id(path: Path) -> str:
    """The document's path from the repository root, as the test id."""
    return str(path.relative_to(REPO_ROOT))


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (where a link is a link)."""
    return SPAN.sub("", FENCE.sub("", text))


def code_texts(text: str) -> list[str]:
    """Each logical line of every fenced block (backslash continuations joined) and each inline code span."""
    lines = [line for block in FENCE.findall(text) for line in block.replace("\\\n", " ").splitlines()]
    return lines + [" ".join(span.split()) for span in SPAN.findall(FENCE.sub("", text))]


def shown_commands(text: str) -> list[list[str]]:
    """The commands of every code line or span that starts with one of STARTS, as tokens (each from its first word
    to the next separator, so `aligned-forensics preset x.yaml && dvc repro` gives two)."""
    found = []
    for code in code_texts(text):
        code = code.strip().removeprefix("$ ")
        if not any(f"{code} ".startswith(" ".join(start) + " ") for start in STARTS):
            continue
        tokens = shlex.split(code, comments=True)  # unbalanced quotes fail here: a broken command line
        command: list[str] | None = None
        for i, token in enumerate(tokens):
            if token in SEPARATORS:
                command = None
            elif command is None and any(tuple(tokens[i:i + len(start)]) == start for start in STARTS):
                command = [token]
                found.append(command)
            elif command is not None:
                command.append(token)
    return found


def params_key_exists(params: object, key: str) -> bool:
    """Whether a dotted params key exists; list items by index (`fetch.sources.1.count`, `fetch.sources[1].count`)."""
    node = params
    for part in re.findall(r"[^.\[\]]+", key):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def stage_names() -> set[str]:
    """Every stage `dvc repro` accepts: plain stages, foreach groups and their `group@item` members."""
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    variables = {name: value for entry in pipeline.get("vars", []) if isinstance(entry, dict)
                 for name, value in entry.items()}
    names = set(pipeline["stages"])
    for name, stage in pipeline["stages"].items():
        items = stage.get("foreach", [])
        if isinstance(items, str):  # `foreach: ${models}`, one of dvc.yaml's vars
            items = variables[items.removeprefix("${").removesuffix("}")]
        names |= {f"{name}@{item}" for item in items}
    return names


def make_targets() -> set[str]:
    """The Makefile's rule names."""
    return set(re.findall(r"^([A-Za-z][\w.-]*):", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE))


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated heading suffixed -1, -2, …"""
    found: set[str] = set()
    for heading in re.findall(r"^#+ +(.+?) *$", FENCE.sub("", doc.read_text()), re.MULTILINE):
        slug = candidate = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        repeat = 0
        while candidate in found:
            repeat += 1
            candidate = f"{slug}-{repeat}"
        found.add(candidate)
    return found


def parses_as_aligned_forensics(argv: list[str]) -> str:
    """'' when the console command's parser accepts argv (or answers --help/--version), else its complaint."""
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        try:
            commands.build_parser().parse_args(argv)
        except SystemExit as stop:
            return "" if stop.code == 0 else errors.getvalue().strip()
    return ""


def problems_in(command: list[str], *, params: object, stages: set[str], targets: set[str]) -> list[str]:
    """What in one shown command does not exist: params keys, stages, make targets, subcommands or options."""
    line = " ".join(command)
    if command[0] == "make":
        return [f"{line}: no make target {word!r}" for word in command[1:]
                if not word.startswith("-") and "=" not in word and word not in targets]
    if command == ["aligned-forensics"]:  # prose naming the command
        return []
    if command[0] == "aligned-forensics":
        named = len(command) == 2 and not command[1].startswith("-")  # prose naming a subcommand
        complaint = parses_as_aligned_forensics(command[1:] + ["--help"] if named else command[1:])
        return [f"{line}: {complaint}"] if complaint else []
    if command[1] == "repro":
        return [f"{line}: no stage {word!r} in dvc.yaml" for word in command[2:]
                if not word.startswith("-") and word not in stages]
    found = []
    for flag, value in itertools.pairwise(command):
        if flag not in ("-S", "--set-param") or value == PLACEHOLDER:
            continue
        key, equals, _ = value.partition("=")
        if not equals:
            found.append(f"{line}: -S {value!r} is not key=value")
        elif not params_key_exists(params, key):
            found.append(f"{line}: params key {key!r} is not in params.yaml")
    return found


def test_the_documents_are_found():
    assert DOCS[0].name == "README.md" and len(DOCS) > 1


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_relative_link_resolves(doc):
    targets = [target for target in LINK.findall(prose(doc.read_text()))
               if not re.match(r"[a-z][a-z0-9+.-]*:", target)]
    problems = []
    for target in targets:
        path, _, anchor = target.partition("#")
        file = doc.parent / path if path else doc
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no such heading in {file.name}")
    assert not problems, f"{doc_id(doc)}: broken links: {problems}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_shown_command_names_what_exists(doc):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    stages, targets = stage_names(), make_targets()
    problems = [problem for command in shown_commands(doc.read_text())
                for problem in problems_in(command, params=params, stages=stages, targets=targets)]
    assert not problems, f"{doc_id(doc)}:\n" + "\n".join(problems)


def test_the_readme_shows_the_two_commands_and_a_run_with_a_params_key():
    shown = shown_commands((REPO_ROOT / "README.md").read_text())
    assert ["make", "demo"] in shown and ["make", "test"] in shown
    assert any(command[:3] == ["dvc", "exp", "run"] and "-S" in command for command in shown)


@pytest.mark.parametrize(("code", "problem"), [
    ("dvc exp run -S train.lrr=1e-3", "params key 'train.lrr'"),
    ("dvc exp run -S fetch.sources.7.count=5", "params key 'fetch.sources.7.count'"),
    ("dvc exp run -S fetch.sources[0].list_file=x.txt", "params key 'fetch.sources[0].list_file'"),
    ("dvc exp run -S train.seed", "not key=value"),
    ("dvc repro --force fetchh", "no stage 'fetchh'"),
    ("make setup && make demoo", "no make target 'demoo'"),
    ("aligned-forensics predictt photos/", "invalid choice"),
    ("aligned-forensics predict photos/ --outt x.csv", "unrecognized arguments"),
])
def test_a_wrong_command_is_caught(code, problem):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    problems = [found for command in shown_commands(f"Run `{code}`.")
                for found in problems_in(command, params=params, stages=stage_names(), targets=make_targets())]
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("code", [
    "dvc exp run -S fetch.sources.1.crops_per_photo=80 -S 'fetch.sources[0].count=5' -S train.seed=1,2",
    "dvc repro threshold@base && dvc repro --force fetch",
    "aligned-forensics preset presets/paper.yaml --check",
    "aligned-forensics --help",
])
def test_a_right_command_passes(code):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    shown = shown_commands(f"```bash\n{code}   # a comment, with an apostrophe's quote\n```\n")
    assert shown and not [found for command in shown
                          for found in problems_in(command, params=params, stages=stage_names(),
                                                   targets=make_targets())]


def test_links_and_code_are_told_apart():
    text = "[a](here.md) `[b](code.md)`\n```\n[c](block.md)\n```\n[d](https://x.org) [e](#anchor)"
    assert LINK.findall(prose(text)) == ["here.md", "https://x.org", "#anchor"]


def test_heading_anchors_follow_github(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("# Real photos: MS-COCO, LSUN, your own folders\n## What the demo is — and is not\n"
                   "## Working as a team / on a cluster\n```\n# not a heading\n```\n## Notes\n## Notes\n")
    assert anchors(doc) == {"real-photos-ms-coco-lsun-your-own-folders", "what-the-demo-is--and-is-not",
                            "working-as-a-team--on-a-cluster", "notes", "notes-1"}
