"""A project's input is bounded by the patches it gives its backbone, not by pixels alone."""

from __future__ import annotations

import pytest
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import (
    PROJECT_MAX_PATCHES,
    ProjectOptions,
    patch_size_of,
    project_side_limit,
)
from zerolabel.settings import BackendSettings


def _spec(extra: dict[str, object], **env: str):
    return ProjectOptions.parse(extra).spec(BackendSettings.from_env(env), masks=True)


def _patches(side: int, backbone: str) -> int:
    return (side // patch_size_of(backbone)) ** 2


@pytest.mark.parametrize(
    ("backbone", "patch"),
    [
        ("dino_vits16", 16),
        ("dino_vitb8", 8),
        ("dinov2_vits14", 14),
        ("vit_small_patch16_224.dino", 16),
        ("vit_small_patch14_dinov2.lvd142m", 14),
        ("some_custom_vit", 8),  # a name that states no patch: the smallest in use
    ],
)
def test_the_patch_size_is_read_from_the_backbones_name(backbone, patch):
    assert patch_size_of(backbone) == patch


def test_the_reported_square_of_2048_px_is_refused_with_the_bound_it_breaks():
    with pytest.raises(ConfigError) as refused:
        _spec({"square": 2048})
    message = str(refused.value)
    assert '"square" 2048 px gives up to 16384 patches of dino_vits16' in message
    assert f"use at most {project_side_limit('dino_vits16')} px" in message


@pytest.mark.parametrize("backbone", ["dino_vits16", "dino_vits8", "dino_vitb8", "dinov2_vits14"])
@pytest.mark.parametrize("option", ["square", "max_side"])
def test_the_largest_input_a_project_may_give_is_the_bound_for_each_backbone(backbone, option):
    limit = project_side_limit(backbone)
    assert _patches(limit, backbone) == PROJECT_MAX_PATCHES
    spec = _spec({"backbone": backbone, option: limit})
    assert getattr(spec, option) == limit
    with pytest.raises(ConfigError, match=f"at most {limit} px"):
        _spec({"backbone": backbone, option: limit + patch_size_of(backbone)})


def test_a_method_default_beyond_the_bound_is_capped_for_a_fine_backbone():
    # LOST's default cap of 1024 px is 4096 patches at ViT-S/16, but 16384 at ViT-S/8
    assert _spec({"method": "lost"}).effective_max_side() == 1024
    small_patches = _spec({"method": "lost", "backbone": "dino_vits8"})
    assert small_patches.effective_max_side() == 512 == project_side_limit("dino_vits8")


def test_the_operators_size_is_the_operators_choice():
    spec = _spec({"method": "lost", "backbone": "dino_vits8"}, ZEROLABEL_MAX_SIDE="1024")
    assert spec.effective_max_side() == 1024
    full = _spec({"method": "lost", "backbone": "dino_vits8"}, ZEROLABEL_MAX_SIDE="0")
    assert full.effective_max_side() is None
