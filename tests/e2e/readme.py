"""The command lines README.md documents, read from its text so that tests follow the README.

A test that runs these lines (with placeholders such as project ids and ``<digest>`` filled in
from earlier outputs) breaks when the README changes a command, a flag or the order of steps.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import ROOT

README = ROOT / "README.md"
LOOP = "From no labels to a detector: the loop"
DEPLOY = "Without Docker"


@dataclass(frozen=True)
class Line:
    """One shell line of a README code block.

    Attributes:
        argv: the words of the command, comments and optional ``[...]`` groups left out.
        alternative: the words after ``# or:`` in its comment (another documented form).
    """

    argv: list[str]
    alternative: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The ``zerolabel`` subcommand (the first word that is not a global option), else the
        program (``echo``)."""
        if self.argv[0] != "zerolabel":
            return self.argv[0]
        words = self.argv[1:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] == "--env-file" else words[1:]
        return words[0] if words else ""


def section(heading: str, text: str | None = None) -> str:
    """The text under the markdown heading that ends with ``heading``, up to the next heading
    of the same or a higher level."""
    text = README.read_text() if text is None else text
    match = re.search(rf"^(#+) [^\n]*{re.escape(heading)}\n", text, flags=re.MULTILINE)
    if match is None:
        raise LookupError(f"README.md has no heading {heading!r}")
    level = len(match.group(1))
    kept, fenced = [], False
    for line in text[match.end() :].splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            break  # a heading (a `#` line inside a code block is a comment)
        kept.append(line)
    return "".join(kept)


def shell_lines(heading: str, text: str | None = None) -> list[Line]:
    """The ``zerolabel`` and ``echo`` lines of the first bash block under ``heading``, in order;
    continued lines (ending in a backslash) joined."""
    block = re.search(r"```bash\n(.*?)```", section(heading, text), flags=re.DOTALL)
    if block is None:
        raise LookupError(f"README.md section {heading!r} has no bash block")
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    lines = []
    for raw in joined.splitlines():
        if not raw.startswith(("zerolabel ", "echo ")):
            continue
        words = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", raw), comments=True)
        alternative = re.search(r"#\s*or:\s*(.+)$", raw)
        lines.append(Line(words, shlex.split(alternative.group(1)) if alternative else []))
    return lines


def echo_file(line: Line) -> tuple[str, str]:
    """``echo 'TEXT' > FILE`` as (FILE, TEXT)."""
    if len(line.argv) != 4 or line.argv[0] != "echo" or line.argv[2] != ">":
        raise ValueError(f"not an `echo 'TEXT' > FILE` line: {line.argv}")
    return line.argv[3], line.argv[1]


def echo_json(line: Line) -> tuple[str, dict[str, str]]:
    """``echo '{...}' > FILE`` as (FILE, the JSON object)."""
    name, text = echo_file(line)
    return name, json.loads(text)


def with_values(argv: list[str], values: dict[str, str]) -> list[str]:
    """``argv`` with the value after each flag of ``values`` replaced; every flag must be there,
    and no ``<placeholder>`` may be left."""
    out = list(argv)
    for flag, value in values.items():
        if flag not in out[:-1]:
            raise ValueError(f"README command {shlex.join(argv)} has no {flag}")
        out[out.index(flag) + 1] = value
    left = [word for word in out if re.search(r"<[^>]+>", word)]
    if left:
        raise ValueError(f"placeholders left in {shlex.join(out)}: {left}")
    return out


def as_process(argv: list[str], python: str) -> list[str]:
    """A ``zerolabel ...`` line as the process to start with ``python`` (same CLI, same args)."""
    if argv[0] != "zerolabel":
        raise ValueError(f"not a zerolabel command: {argv}")
    return [python, "-m", "zerolabel.cli.main", *argv[1:]]


def env_file(values: dict[str, str], example: Path | None = None) -> str:
    """The text of ``docker/zerolabel.env.example`` with ``values`` set; every name must be one
    the example documents."""
    example = example or ROOT / "docker" / "zerolabel.env.example"
    lines, seen = [], set()
    for line in example.read_text().splitlines():
        name = line.partition("=")[0]
        if not line.startswith("#") and name in values:
            line = f"{name}={values[name]}"
            seen.add(name)
        lines.append(line)
    missing = set(values) - seen
    if missing:
        raise ValueError(f"not documented in {example.name}: {sorted(missing)}")
    return "\n".join(lines) + "\n"
