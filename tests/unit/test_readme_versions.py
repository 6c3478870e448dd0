"""The README's model_version examples have the form DiscoverySpec.model_version() writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from zerolabel.settings import BackendSettings

README = Path(__file__).resolve().parents[2] / "README.md"

VERSION = re.compile(
    r"zerolabel-(?:[a-z0-9_]+|<method>)-(?:[a-z0-9_]+|<backbone>)-(?:[0-9a-f]{10}|<digest>)"
)
"""``zerolabel-<method>-<backbone>-<digest>`` (a 10-digit hex digest), or with placeholders."""

_EXAMPLE = re.compile(r"zerolabel-[\w<>]+-[\w<>]+-[\w<>.-]*")  # three parts or more: a version
_OPTION = re.compile(r"--model-version[ =](\S+)")


def _examples(text: str) -> list[str]:
    named = [v.rstrip("]),.") for v in _OPTION.findall(text)]
    named = [v for v in named if v not in ("V", "VERSION")]
    return named + [m.group(0).rstrip(".-") for m in _EXAMPLE.finditer(text)]


@pytest.mark.parametrize("method", ["lost", "tokencut", "maskcut"])
def test_the_pattern_is_what_the_spec_writes(method):
    spec = BackendSettings().discovery.spec(method=method, masks=method == "maskcut")
    assert VERSION.fullmatch(spec.model_version())


def test_every_model_version_in_the_readme_has_the_real_form():
    examples = _examples(README.read_text())
    assert examples, "the README shows no model_version"
    wrong = [example for example in examples if not VERSION.fullmatch(example)]
    assert wrong == []


def test_the_check_catches_a_wrong_form():
    text = "zerolabel eval --project 3 --model-version zerolabel-cad-cad-<digest>-<hash>"
    assert [e for e in _examples(text) if not VERSION.fullmatch(e)] == [
        "zerolabel-cad-cad-<digest>-<hash>",
        "zerolabel-cad-cad-<digest>-<hash>",
    ]
    assert _examples("zerolabel-worker and zerolabel-backend") == []
