"""The documentation site: built from the code, its output run rather than typed, looked at in a browser."""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from browser import chromium, needs_chromium

from pytest_navigator import options
from pytest_navigator.plugin import items

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_SPHINX = "the docs extra is not installed (pip install -e '.[docs]')"
HAS_SPHINX = all(importlib.util.find_spec(name) for name in ("sphinx", "myst_parser", "furo"))


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load(DOCS / "_ext" / "navigator_docs.py")


@pytest.fixture(scope="module")
def snippets() -> ModuleType:
    return _load(DOCS / "snippets.py")


def _build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", "html", str(source), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `tox -e docs` builds it: warnings are errors."""
    if not HAS_SPHINX:
        pytest.skip(NO_SPHINX)
    out = tmp_path_factory.mktemp("site")
    built = _build(DOCS, out)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def _text(page: str) -> str:
    """A page's text: no tags, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", page)))


# The reference is generated from the code


def test_every_option_and_marker_setting_is_in_the_built_reference(site: Path) -> None:
    page = (site / "reference" / "options.html").read_text()
    text = _text(page)
    for option in options.OPTIONS:
        assert option.flag in page, option.flag
        if option.ini:
            assert option.ini in page, option.ini
        assert " ".join(option.help.split()) in text, option.flag  # whole, and -- not turned into a dash
    for name in options.MARKER_SETTINGS:
        assert f'<code class="docutils literal notranslate"><span class="pre">{name}</span></code>' in page, name


def test_the_cli_the_schema_and_the_api_are_in_the_built_reference(site: Path) -> None:
    cli = (site / "reference" / "cli.html").read_text()
    for command in ("profile", "compare", "report", "merge", "export"):
        assert f"navigator {command}" in cli
    assert "--fail-on" in cli and "--allow-hardware-mismatch" in cli
    schema = (site / "reference" / "report-schema.html").read_text()
    for field in ("schema_version", "device.cpu.model", "settings.latency_budget_ms", 'id="schema-model"', "runtimes"):
        assert field in schema, field
    api = (site / "reference" / "api.html").read_text()
    import pytest_navigator

    for name in pytest_navigator.__all__:
        if not name.startswith("__"):
            assert f'id="pytest_navigator.{name}"' in api, name


def test_a_renamed_option_or_a_removed_help_changes_the_generated_reference(generator: ModuleType) -> None:
    table = list(options.OPTIONS)
    before = generator.options_markdown(table)
    assert before == generator.options_markdown()  # the default is the real table
    window = next(i for i, option in enumerate(table) if option.flag == options.WINDOW)
    renamed = [*table]
    renamed[window] = dataclasses.replace(
        table[window], flag="--navigator-window-length", ini="navigator_window_length"
    )
    after = generator.options_markdown(renamed)
    assert "--navigator-window-length=LENGTH" in after and "navigator_window_length" in after
    assert "`--navigator-window=WINDOW`" in before and "`--navigator-window=WINDOW`" not in after
    helpless = [*table]
    helpless[window] = dataclasses.replace(table[window], help="")
    assert table[window].help.split(":")[0] not in generator.options_markdown(helpless)
    # a marker setting that stands for an option shows that option's help, so it follows it too
    assert table[window].help[:40] in generator.markers_markdown()


def test_the_marker_reference_lists_exactly_what_the_marker_accepts() -> None:
    assert set(items._CHECK_SETTINGS) | set(items._PROFILE_SETTINGS) == set(options.MARKER_SETTINGS)
    for name, text in options.MARKER_SETTINGS.items():
        assert not text.startswith("--") or text in options.BY_FLAG, (name, text)
        assert f"{name}=None" in options.MARKER_LINE


def test_a_broken_internal_link_fails_the_build(tmp_path: Path) -> None:
    if not HAS_SPHINX:
        pytest.skip(NO_SPHINX)
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "_generated"))
    page = source / "how-to" / "update-baselines.md"
    page.write_text(page.read_text() + "\nSee [the old page](../reference/no-such-page.md).\n")
    built = _build(source, tmp_path / "out")
    assert built.returncode != 0
    assert "no-such-page" in built.stderr


# Terminal output is run, not typed


SNIPPET_NAMES = sorted(path.stem for path in (DOCS / "snippets").glob("*.txt"))


def test_every_snippet_file_is_one_the_script_makes(snippets: ModuleType) -> None:
    assert SNIPPET_NAMES == sorted(snippets.BY_NAME)


@pytest.mark.parametrize("name", SNIPPET_NAMES)
def test_the_docs_show_what_the_command_prints_now(name: str, snippets: ModuleType) -> None:
    snippet = snippets.BY_NAME[name]
    stored = (DOCS / "snippets" / f"{name}.txt").read_text()
    assert stored.startswith(f"$ {snippet.commands[0]}\n")
    assert snippets.check(snippet) == "", f"regenerate: python docs/snippets.py {name}"


def test_the_snippet_check_sees_a_changed_message_but_not_a_faster_machine(snippets: ModuleType) -> None:
    snippet = snippets.BY_NAME["first-run"]
    stored = (DOCS / "snippets" / "first-run.txt").read_text()
    faster = re.sub(r"\d+\.\d+", lambda m: str(float(m.group()) / 3)[:5], stored)
    assert faster != stored
    assert snippets.check(snippet, runner=lambda _: faster) == ""
    renamed = stored.replace("navigator runtimes", "navigator builds")
    assert "navigator builds" in snippets.check(snippet, runner=lambda _: renamed)
    fewer = stored.replace("passed", "failed", 1)
    assert snippets.check(snippet, runner=lambda _: fewer) != ""


def test_every_snippet_is_shown_on_a_page() -> None:
    pages = "\n".join(path.read_text() for path in DOCS.rglob("*.md") if "_build" not in path.parts)
    for path in (DOCS / "snippets").glob("*.txt"):
        assert f"snippets/{path.name}" in pages, path.name


# A real browser looks at it


@needs_chromium
def test_chromium_renders_the_index_with_its_navigation_and_the_option_table(site: Path, tmp_path: Path) -> None:
    index, reference = site / "index.html", site / "reference" / "options.html"
    shot = tmp_path / "index.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1000", index.as_uri())
    assert shot.stat().st_size > 20_000
    dom = chromium(tmp_path / "profile", "--dump-dom", index.as_uri()).stdout
    navigation = dom[dom.index('class="sidebar-tree"') :]
    for caption in ("Tutorial", "How-to guides", "Reference", "Explanations"):
        assert caption in navigation, caption
    for page in ("tutorial/first-run.html", "how-to/gpu-runner.html", "reference/options.html"):
        assert f'href="{page}"' in navigation, page
    dom = chromium(tmp_path / "profile", "--dump-dom", reference.as_uri()).stdout
    table = dom[dom.index("<table") : dom.index("</table>")]
    rows = re.findall(r"<tr\b", table)
    assert len(rows) == len(options.OPTIONS) + 1  # a header and one row per option
    for option in options.OPTIONS:
        assert option.flag in table, option.flag


# The README: the front door, kept true


README = ROOT / "README.md"


def test_the_readme_is_short_and_starts_with_the_two_commands_ci_runs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first = text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(first) == 2 and "python -m pytest --navigator-model=demo/resnet.pt2" in first[0]
    ci = (ROOT / ".ci" / "run").read_text().replace("pip install -q ", "pip install ")
    assert first[1] in ci  # CI runs README command 2 as written (quietly)


def test_every_link_of_the_readme_leads_to_a_file() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert len(links) > 10
    for link in links:
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), link


def test_the_readme_shows_output_the_snippets_produced(snippets: ModuleType) -> None:
    blocks = re.findall(r"```text\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks
    produced = [snippets.normalize((DOCS / "snippets" / f"{name}.txt").read_text()) for name in SNIPPET_NAMES]
    for block in blocks:
        assert any(snippets.normalize(block) in text for text in produced), block[:200]


def test_a_timed_snippet_is_checked_only_where_the_machine_cannot_move_it(snippets: ModuleType) -> None:
    snippet = snippets.BY_NAME["profile"]
    stored = (DOCS / "snippets" / "profile.txt").read_text()
    busy = stored.replace(" stable ", " unstable ").replace(" passed ", " failed ")
    busy += "=========================== short test summary info ============================\nFAILED x\n"
    assert snippets.check(snippet, runner=lambda _: busy) == ""
    renamed = stored.replace("samples/s", "req/s")
    assert "req/s" in snippets.check(snippet, runner=lambda _: renamed)
    assert "navigator perf " in snippets.check(
        snippet, runner=lambda _: stored.replace(" navigator performance ", " navigator perf ")
    )


def test_the_int8_snippet_is_checked_where_the_cpus_kernels_cannot_move_it(snippets: ModuleType) -> None:
    snippet = snippets.BY_NAME["int8-failure"]
    stored = (DOCS / "snippets" / "int8-failure.txt").read_text()
    other_cpu = re.sub(r"\(generated\)", "(random sample at batch size 4)", stored)  # other worst samples
    other_cpu = re.sub(r"    worst: .*\n", "", other_cpu)  # the first drop is also the worst
    assert other_cpu != stored and snippets.check(snippet, runner=lambda _: other_cpu) == ""
    no_drop = stored.replace("first drop at input 'input'", "no layer stands out")
    assert "no layer stands out" not in snippets.check(snippet, runner=lambda _: no_drop)  # not a steady line ...
    assert snippets.check(snippet, runner=lambda _: no_drop) != ""  # ... but the first drop's line is gone
    renamed = stored.replace("median SQNR", "median noise")
    assert "median noise" in snippets.check(snippet, runner=lambda _: renamed)
