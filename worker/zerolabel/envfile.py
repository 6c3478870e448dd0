"""Env files read as docker compose reads them, so one file serves compose and bare processes.

The rules (compose's ``env_file`` syntax): ``#`` lines and blank lines are skipped; a line is
``NAME=value``, optionally after ``export``. An unquoted value ends at a ``#`` that follows
whitespace (an inline comment) and loses surrounding whitespace. A value in double quotes keeps
everything up to the closing quote, including ``#``, and turns ``\\n``, ``\\r``, ``\\t``, ``\\\\``
and ``\\"`` into the characters they name. A value in single quotes is literal (``\\'`` is a
quote). After a closing quote only whitespace and a comment may follow. Unquoted and double-quoted
values have ``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME-default}`` replaced from the
lines above and the environment; ``$$`` is a ``$``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, MutableMapping
from pathlib import Path

from zerolabel.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
_REFERENCE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def load_env_file(
    path: str | os.PathLike[str], env: MutableMapping[str, str] | None = None
) -> None:
    """Add the ``NAME=value`` lines of an env file to ``env`` (default ``os.environ``).

    A variable already set in ``env`` keeps its value, so the process environment overrides the
    file. Called once, by entry points (``--env-file``).

    Raises:
        ConfigError: a line that does not parse (naming the file and line); the file cannot be
            read.
    """
    target = os.environ if env is None else env
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"env file {path}: {reason or exc}") from None
    read: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        try:
            parsed = parse_line(line, lambda name: read.get(name, target.get(name)))
        except ValueError as exc:
            raise ConfigError(f"env file {path}, line {number}: {exc}") from None
        if parsed is not None:
            name, value = parsed
            read[name] = value
    for name, value in read.items():
        target.setdefault(name, value)


def parse_line(line: str, lookup: Callable[[str], str | None]) -> tuple[str, str] | None:
    """One line's ``(name, value)``; None for a blank or comment line.

    Args:
        lookup: the value of a variable a value refers to (None: unset).

    Raises:
        ValueError: the line is not ``NAME=value`` or a quote is not closed.
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export ") or stripped.startswith("export\t"):
        stripped = stripped[len("export") :].lstrip()
    name, sep, rest = stripped.partition("=")
    name = name.strip()
    if not sep or not _NAME.fullmatch(name):
        raise ValueError("expected NAME=value")
    rest = rest.lstrip()
    if rest[:1] == "'":
        return name, _quoted(rest, "'")
    if rest[:1] == '"':
        return name, _interpolate(_quoted(rest, '"'), lookup)
    comment = re.search(r"\s#", rest)
    value = rest[: comment.start()] if comment else rest
    return name, _interpolate(value.strip(), lookup)


def _quoted(text: str, quote: str) -> str:
    """The value between ``text``'s opening quote and its closing one, escapes applied."""
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if quote == '"' and following in _ESCAPES:
                out.append(_ESCAPES[following])
                index += 2
                continue
            if following == quote:
                out.append(quote)
                index += 2
                continue
        if char == quote:
            tail = text[index + 1 :].strip()
            if tail and not tail.startswith("#"):
                raise ValueError(f"unexpected {tail!r} after the closing quote")
            return "".join(out)
        out.append(char)
        index += 1
    raise ValueError(f"the value's {quote} quote is not closed")


def _interpolate(value: str, lookup: Callable[[str], str | None]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name is None:
            return "$"  # $$
        found = lookup(name)
        operator = match.group("op")
        if operator == ":-" and not found:
            return match.group("default")
        if operator == "-" and found is None:
            return match.group("default")
        return found or ""

    return _REFERENCE.sub(replace, value)
