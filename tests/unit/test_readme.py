"""README.md's lists are the code's: methods, backbones, settings, commands and their options,
the code layout. Everything is read from the README's text and from the code, never typed here."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from zerolabel import methods
from zerolabel.cli.main import main as cli

from tests.e2e.readme import README, section
from tests.ls_server import label_studio_binary

ROOT = README.parent
ENV_EXAMPLE = ROOT / "docker" / "zerolabel.env.example"
PACKAGES = (ROOT / "worker" / "zerolabel", ROOT / "backend" / "zerolabel_backend")

ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
OPTION = re.compile(r"(?<![\w.-])(--?[A-Za-z][\w-]*)")
CHOICES = re.compile(r"(?<![\w.-])(--?[A-Za-z][\w-]*) ([\w.-]+(?:\|[\w.-]+)+)")
SHARED = re.compile(r"\[any ([\w-]+) option\]")
HELP = set(cli.context_settings["help_option_names"])  # click adds them to every command


# --- reading the README -----------------------------------------------------------------------


def table(text: str) -> list[list[str]]:
    """The rows of the first markdown table in ``text`` (header and rule left out)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 2:
        raise LookupError("no markdown table found")
    return rows[2:]


def ticked(cell: str) -> list[str]:
    """The `backticked` words of a table cell."""
    return re.findall(r"`([^`]+)`", cell)


def blocks(text: str, language: str = "") -> list[str]:
    """The fenced code blocks of ``text`` opened with ```` ```language ````, in order."""
    found: list[str] = []
    inside, kept, lines = False, False, []
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if inside and kept:
                found.append("".join(lines))
            inside, kept, lines = not inside, not inside and line.rstrip() == f"```{language}", []
        elif kept:
            lines.append(line)
    return found


def configuration() -> dict[str, list[str]]:
    """The Configuration table: each variable of the first column -> the row's cells."""
    rows = {}
    for row in table(section("Configuration")):
        for name in ticked(row[0]):
            rows[name] = row
    return rows


def label_studio_settings() -> dict[str, str]:
    """The table of Label Studio's own settings (section "Without Docker"): name -> meaning."""
    text = section("Without Docker")
    start = text.index("| Label Studio setting |")
    return {ticked(row[0])[0]: row[-1] for row in table(text[start:])}


def label_studio_flags() -> set[str]:
    """The options the README gives ``label-studio``: those `backticked` between the table of
    its settings and the next bash block, and those of that block (its start command)."""
    text = section("Without Docker")
    after = text[text.index("| Label Studio setting |") :]
    after = after[after.index("\n\n") :]  # the table's end
    prose, _, rest = after.partition("```bash\n")
    return set(OPTION.findall(" ".join(ticked(prose)))) | set(
        OPTION.findall(blocks("```bash\n" + rest, "bash")[0])
    )


# --- reading the code -------------------------------------------------------------------------


def _python_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from package.rglob("*.py")


def environment_names_in_code() -> set[str]:
    """Every string constant of the library and backend that has the form of a variable name:
    what the code can read from the environment (a superset: also other constants)."""
    names: set[str] = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.fullmatch(node.value):
                    names.add(node.value)
    return names


def backbones() -> dict[str, str]:
    """``zerolabel.vit.backbone.BACKBONES``, read from its source (no torch import)."""
    tree = ast.parse((PACKAGES[0] / "vit" / "backbone.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "BACKBONES":
            assert node.value is not None
            found: dict[str, str] = ast.literal_eval(node.value)
            return found
    raise LookupError("backbone.py defines no BACKBONES")


def commands() -> dict[str, click.Command]:
    """Every ``zerolabel`` command, those of the entry-point group (``serve``) included."""
    context = click.Context(cli)
    found = {name: cli.get_command(context, name) for name in cli.list_commands(context)}
    return {name: command for name, command in found.items() if command is not None}


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


# --- methods and backbones ----------------------------------------------------------------------


def test_the_method_table_lists_every_registered_method_once():
    names = [ticked(row[0])[0] for row in table(section("Methods"))]
    assert sorted(names) == sorted(methods.METHOD_NAMES)


def test_the_method_setting_lists_every_registered_method():
    row = configuration()["ZEROLABEL_METHOD"]
    assert set(ticked(row[2])) == set(methods.METHOD_NAMES)


def test_the_env_file_names_every_method_above_the_method_setting():
    comment = re.search(r"((?:^#.*\n)+)ZEROLABEL_METHOD=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert comment is not None
    named = set(re.findall(r"\b[a-z]+\b", comment.group(1)))
    assert set(methods.METHOD_NAMES) - named == set()


def test_the_backbone_setting_lists_every_named_backbone():
    assert set(ticked(configuration()["ZEROLABEL_BACKBONE"][2])) == set(backbones())


def test_every_named_backbone_has_its_hub_tag_and_an_official_download():
    rows = table(section("Weights"))
    listed = {ticked(row[0])[0]: row for row in rows}
    assert sorted(listed) == sorted(backbones()), "one row per name of BACKBONES"
    for name, tag in backbones().items():
        assert ticked(listed[name][1]) == [tag]
        assert re.search(r"https://\S+", listed[name][2]), f"{name}: no download URL"


# --- settings ---------------------------------------------------------------------------------


def test_every_setting_of_the_configuration_table_is_read_and_documented():
    read = environment_names_in_code()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    names = set(configuration())
    assert names - read == set(), "the code reads no such variable"
    assert names - documented == set(), "docker/zerolabel.env.example does not describe it"


def test_the_configuration_defaults_are_those_of_the_env_file():
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    for name, row in configuration().items():
        default = ticked(row[1])
        if len(default) == 1 and name in example and "," not in row[0]:
            assert default[0] == example[name], name


def _prose_and_shell() -> str:
    """The README without its unlabeled code blocks (the synopsis and layout name placeholders
    such as VOC_XML_DIR, not variables)."""
    text = README.read_text()
    for block in blocks(text):
        text = text.replace(block, "")
    return text


def test_every_variable_the_readme_names_is_read_by_zerolabel_or_by_label_studio():
    ours, studios = environment_names_in_code(), set(label_studio_settings())
    named = set(ENV_NAME.findall(_prose_and_shell()))
    assert named - ours - studios == set(), (
        "the README names variables that neither the code reads nor its table of Label "
        "Studio's settings lists"
    )
    assert studios & ours == set(), "a variable zerolabel reads is in Label Studio's table"


def _label_studio_source() -> Path:
    """Label Studio's package folder, in the environment of the server the e2e tests start."""
    binary = label_studio_binary()
    environment = Path(binary).resolve().parent.parent if binary else None
    found = environment and next(environment.glob("lib/python3*/site-packages/label_studio"), None)
    if found is None:
        if os.environ.get("ZEROLABEL_REQUIRE_E2E"):
            pytest.fail("ZEROLABEL_REQUIRE_E2E is set but Label Studio's source is not found")
        pytest.skip("Label Studio is not installed: set ZEROLABEL_LS_BIN (see .ci/run)")
    return found


def test_label_studio_reads_every_setting_the_readme_gives_it():
    """Label Studio 1.23 reads ``X`` as ``LABEL_STUDIO_X``, ``HEARTEX_X`` or ``X``."""
    source = _label_studio_source()
    settings = "\n".join(p.read_text() for p in (source / "core" / "settings").glob("*.py"))
    for name in label_studio_settings():
        key = name.removeprefix("LABEL_STUDIO_")
        assert re.search(rf"get_(?:bool_)?env\(\s*['\"]{key}['\"]", settings), name
    flags = set(
        re.findall(r"['\"](--?[\w-]+)['\"]", (source / "core" / "argparser.py").read_text())
    )
    assert label_studio_flags(), "the README gives label-studio no option"
    assert label_studio_flags() - flags == set(), "options label-studio does not take"


# --- commands and options ---------------------------------------------------------------------


def synopsis() -> dict[str, str]:
    """The "Command line" block: command (``""`` for ``zerolabel`` itself) -> its lines."""
    (block,) = blocks(section("Command line"))[:1]
    found: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        line = line.split("#", 1)[0]
        words = line.split()
        if words[:1] == ["zerolabel"]:
            command = "" if words[1].startswith(("[", "-")) else words[1]
            rest = words[1:] if command == "" else words[2:]
            found[command] = found.get(command, "") + " " + " ".join(rest)
        elif command is not None and words:
            found[command] += " " + line.strip()
    return found


def documented_options(lines: dict[str, str], command: str) -> set[str]:
    """The options the synopsis gives ``command``, with those of ``[any OTHER option]``."""
    named = set(OPTION.findall(lines[command]))
    for other in SHARED.findall(lines[command]):
        named |= documented_options(lines, other)
    return named


def test_the_synopsis_names_every_command_and_nothing_else():
    assert set(synopsis()) - {""} == set(commands())


def test_the_synopsis_names_the_options_every_command_takes():
    lines = synopsis()
    for name, command in {"": cli, **commands()}.items():  # "": zerolabel's own options
        named = documented_options(lines, name)
        real = {flag for option in options(command) for flag in option.opts + option.secondary_opts}
        missing = [o.opts for o in options(command) if not named & {*o.opts, *o.secondary_opts}]
        assert missing == [], f"zerolabel {name}: options the synopsis leaves out"
        assert named - real - HELP == set(), f"zerolabel {name}: no such options"


def test_the_values_the_synopsis_offers_are_the_choices():
    lines = synopsis()
    for name, command in commands().items():
        by_flag = {flag: o for o in options(command) for flag in o.opts}
        for flag, values in CHOICES.findall(lines[name]):
            kind = by_flag[flag].type
            if isinstance(kind, click.Choice):
                assert set(values.split("|")) == set(kind.choices), f"zerolabel {name} {flag}"


# --- figures ----------------------------------------------------------------------------------

BENCH_SCRIPT = re.compile(r"bench/[\w.]+\.(?:py|sh)")


def test_every_benchmark_table_names_the_script_that_prints_it():
    headings = re.findall(r"^### (.*)$", section("Benchmarks"), re.MULTILINE)
    assert headings
    for heading in headings:
        scripts = BENCH_SCRIPT.findall(heading)
        assert scripts, f"no bench/ script named in {heading!r}"
        assert all((ROOT / script).is_file() for script in scripts), heading


def test_the_readme_names_every_bench_script_and_no_other():
    present = {f"bench/{p.name}" for p in (ROOT / "bench").iterdir() if p.suffix in (".py", ".sh")}
    assert set(BENCH_SCRIPT.findall(README.read_text())) == present


def test_the_loop_time_table_is_the_one_its_script_prints():
    text = section("From no labels to a detector: the loop")
    header = next(line for line in text.splitlines() if line.startswith("| step |"))
    introduction = text[: text.index(header)].rsplit("```", 1)[-1]
    assert "`python bench/bench_loop.py`" in introduction
    assert header in (ROOT / "bench" / "bench_loop.py").read_text()


# --- code layout ------------------------------------------------------------------------------


def layout() -> dict[Path, str]:
    """The "Code layout" block: each path it names (nested by indentation) -> its description."""
    (block,) = blocks(section("Code layout"))[:1]
    entries: dict[Path, str] = {}
    parents: list[tuple[int, Path]] = []
    last = None
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if indent >= 8 and last is not None:  # a description going on
            entries[last] += " " + line.strip()
            continue
        name, _, description = line.strip().partition(" ")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        last = (parents[-1][1] if parents else ROOT) / name.rstrip("/")
        entries[last] = description.strip()
        if name.endswith("/"):
            parents.append((indent, last))
    return entries


def _listed_modules(description: str) -> list[str]:
    """``name (what it does), other and third (...)`` after an optional ``heading:`` -> names."""
    text = description
    while "(" in text:
        text = re.sub(r"\([^()]*\)", "", text)
    text = text.rsplit(":", 1)[-1]
    items = [item.strip() for item in re.split(r",| and ", text) if item.strip()]
    wrong = [item for item in items if not re.fullmatch(r"[a-z_][a-z0-9_]*", item)]
    assert wrong == [], f"not module names in the layout's {description!r}: {wrong}"
    return items


def _modules(package: Path) -> set[str]:
    return {
        p.stem if p.is_file() else p.name
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }


def test_every_path_of_the_layout_exists():
    missing = [str(path.relative_to(ROOT)) for path in layout() if not path.exists()]
    assert missing == []


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_the_layout_names_every_module(package):
    entries = layout()
    packages = [package, *(p.parent for p in package.rglob("__init__.py") if p.parent != package)]
    for folder in packages:
        assert folder in entries, f"the layout does not name {folder.relative_to(ROOT)}/"
        children = {path.stem for path in entries if path.parent == folder}
        named = children or set(_listed_modules(entries[folder]))
        assert named == _modules(folder), f"modules of {folder.relative_to(ROOT)}/"
