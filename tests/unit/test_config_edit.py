"""Labeling config edits: labels added, renamed and merged, the rest kept as written."""

from __future__ import annotations

import re

import pytest
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.config_edit import add_labels, default_config, rename_labels
from zerolabel.labelstudio.label_config import find_target

TEAM_CONFIG = """<?xml version="1.0" encoding="utf-8"?>
<!-- pseudo-classes of the street dataset -->
<View>
  <!-- the photo -->
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="label" toName="image">
    <Label value="cluster_00" background="#ff0000"/>
    <!-- cluster_01 looks like bikes -->
    <Label value="cluster_01" background="#00ff00"/>
    <Label value="dog" hotkey="d"/>
  </RectangleLabels>
  <BrushLabels name="mask" toName="image"><Label value="cluster_00"/><Label value="cluster_01"/>\
</BrushLabels>
</View>
"""

MERGE = {"cluster_00": "dog", "cluster_01": "bike"}


def _values(config: str, tag: str) -> list[str]:
    block = re.search(f"<{tag} .*?</{tag}>", config, re.S)
    assert block is not None
    return re.findall(r'<Label value="([^"]*)"', block.group(0))


def test_rename_merges_away_labels_and_keeps_comments_and_layout():
    edited = rename_labels(TEAM_CONFIG, MERGE)
    assert _values(edited, "RectangleLabels") == ["bike", "dog"]
    assert _values(edited, "BrushLabels") == ["dog", "bike"]
    for kept in (
        '<?xml version="1.0" encoding="utf-8"?>\n<!-- pseudo-classes of the street dataset -->',
        "<!-- the photo -->",
        "<!-- cluster_01 looks like bikes -->",
        '<Label value="dog" hotkey="d" />',  # the label that had the name stays, attributes too
        '<Label value="bike" background="#00ff00" />',  # renamed in place, colour kept
        '<Image name="image" value="$image" zoom="true" />',
    ):
        assert kept in edited
    assert "cluster_0" not in edited.replace("cluster_01 looks", "")
    assert "\n  <RectangleLabels" in edited and edited.endswith("</View>\n")
    assert find_target(edited, label="bike").brush_label == "bike"


def test_the_same_mapping_twice_changes_nothing():
    once = rename_labels(TEAM_CONFIG, MERGE)
    assert rename_labels(once, MERGE) == once
    assert add_labels(once, ["dog", "bike"]) == once


def test_a_config_needing_no_edit_comes_back_verbatim():
    assert rename_labels(TEAM_CONFIG, {"cat": "animal"}) == TEAM_CONFIG
    assert add_labels(TEAM_CONFIG, ["cluster_00", "cluster_01"]) == TEAM_CONFIG


def test_renaming_is_simultaneous_not_chained():
    config = default_config(["a", "b"])
    assert _values(rename_labels(config, {"a": "b", "b": "c"}), "BrushLabels") == ["b", "c"]


def test_added_labels_take_the_indentation_of_their_siblings():
    edited = add_labels(TEAM_CONFIG, ["cat"])
    assert (
        '    <Label value="dog" hotkey="d" />\n    <Label value="cat" />\n  </RectangleLabels>'
        in (edited)
    )
    assert '<Label value="cluster_01" /><Label value="cat" /></BrushLabels>' in edited
    assert "<!-- cluster_01 looks like bikes -->" in edited


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            '<!DOCTYPE View [<!ENTITY a "aaaa">]><View><RectangleLabels name="l" toName="i">'
            "<Label value='&a;'/></RectangleLabels></View>",
            "<!DOCTYPE> or <!ENTITY>",
            id="entity",
        ),
        pytest.param(
            "<View>" * 65 + '<RectangleLabels name="l"/>' + "</View>" * 65,
            "more than 64 deep",
            id="deeply-nested",
        ),
        pytest.param(
            "<View><Image name='i' value='$i'/></View>", "no <RectangleLabels>", id="bare"
        ),
    ],
)
@pytest.mark.parametrize("edit", [rename_labels, add_labels])
def test_edits_parse_as_defensively_as_reads(edit, config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        edit(config, {"cluster_00": "dog"})
