"""The documentation's commands and links stay true: every `python -m` command in a fenced bash block of
README.md, docs/ and benchmarks/README.md is accepted by that module's own argument parser, every python
block parses, and every relative link of a docs page leads to an existing file and heading."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").rglob("*.md")) + [REPO / "benchmarks" / "README.md"]
PAGES = [REPO / "README.md", *DOCS]
FENCE = re.compile(r"^[ \t]*```bash\n(.*?)^[ \t]*```", re.S | re.M)
COMMENT = re.compile(r"(?:^|\s)#.*$")
PYTHON_FENCE = re.compile(r"^[ \t]*```python\n(.*?)^[ \t]*```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


class _Parsed(BaseException):
    """Raised instead of running the command once its arguments have parsed."""


def _commands(page: Path) -> list[list[str]]:
    """Each `python -m MODULE ARGS` of the page's bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in FENCE.findall(page.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(COMMENT.sub("", line))
            if words[:2] == ["python", "-m"]:
                found.append(words[2:])
    return found


COMMANDS = [(page, words) for page in PAGES for words in _commands(page)]


def _entry_point(module: str):
    """The `main` that `python -m module` runs (a package's `__main__`)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:
        module += ".__main__"
    return importlib.import_module(module).main


def test_the_docs_hold_commands_of_every_step() -> None:
    modules = {words[0] for _, words in COMMANDS}
    assert {
        "bridge.subset",
        "bridge.convert",
        "bridge.initcheck",
        "bridge.compare",
        "bridge.panoptic",
        "bridge.meta",
        "mmdet_side.config",
        "d2_side.meta",
        "mmdet_side.meta",
    } <= modules


@pytest.mark.parametrize(
    ("page", "words"), COMMANDS, ids=[f"{p.relative_to(REPO)}:{' '.join(w)[:60]}" for p, w in COMMANDS]
)
def test_documented_command_parses(page: Path, words: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    main = _entry_point(words[0])
    try:
        main(words[1:])
    except SystemExit as exc:
        pytest.fail(
            f"{page.relative_to(REPO)}: `python -m {' '.join(words)}` is refused by its parser (exit {exc.code})"
        )
    except _Parsed:
        return
    pytest.fail(f"`python -m {words[0]}` returned without parsing its arguments")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_python_snippets_are_valid_python(page: Path) -> None:
    for block in PYTHON_FENCE.findall(page.read_text(encoding="utf-8")):
        try:
            ast.parse(textwrap.dedent(block))
        except SyntaxError as exc:
            pytest.fail(f"{page.relative_to(REPO)}: a python block does not parse: {exc}")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings."""
    text = page.read_text(encoding="utf-8")
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_docs_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(REPO)} links to missing {target}"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.relative_to(REPO)} links to missing heading {target}"


HELP_MODULES = [
    "bridge.subset",
    "bridge.convert",
    "bridge.compare",
    "bridge.panoptic",
    "bridge.meta",
    "bridge.initcheck",
    "bridge.local",
    "bridge.report",
    "mmdet_side.target",
    "d2_side.meta",
    "mmdet_side.meta",
    "d2_side.init_state",
    "mmdet_side.init_state",
]


@pytest.mark.parametrize("words", [[m] for m in HELP_MODULES] + [["bridge.convert", "draft"]], ids=" ".join)
def test_every_verb_help_shows_an_example_that_parses(
    words: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main = _entry_point(words[0])
    with pytest.raises(SystemExit) as exc:
        main([*words[1:], "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "examples:" in out, out
    example = out.split("examples:\n", 1)[1].replace("\\\n", " ").splitlines()[0].split()
    assert example[:3] == ["python", "-m", words[0]], example
    test_documented_command_parses(REPO / "README.md", example[2:], monkeypatch)


def test_json_reports_are_named_json_everywhere() -> None:
    """No verb offers ``--report`` any more (``add_json_option`` keeps it only as a hidden alias)."""
    for module in HELP_MODULES:
        parser_help = importlib.import_module(
            module if importlib.util.find_spec(module).submodule_search_locations is None else module + ".__main__"
        )
        assert 'add_argument("--report"' not in Path(parser_help.__file__).read_text(), module
