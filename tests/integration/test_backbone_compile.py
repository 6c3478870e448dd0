"""torch.compile of the ViT trunk: same features, the last block still hooked (dynamo is slow
to import and trace, so this lives with the integration tests)."""

from __future__ import annotations

import torch
from zerolabel.vit import features
from zerolabel.vit.backbone import load_backbone

ARCH = "vit_small_patch16_224"


def test_a_compiled_trunk_gives_the_same_features_and_keeps_the_last_block_hooked():
    from zerolabel.vit.backbone import compile_trunk

    torch.manual_seed(0)
    eager = load_backbone(ARCH, device="cpu", random_weights=True, model_kwargs={"depth": 3})
    compiled = load_backbone(ARCH, device="cpu", random_weights=True, model_kwargs={"depth": 3})
    compiled.model.load_state_dict(eager.model.state_dict())
    compiled.trunk = compile_trunk(compiled.model, "default", backend="eager")  # no C++ build
    calls = []
    compiled.model.blocks[0].register_forward_hook(lambda *_: calls.append("block0"))
    for hw in ((64, 96), (80, 48)):  # two sizes through the same compiled trunk
        images = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(2))
        ours, theirs = features.extract(compiled, images), features.extract(eager, images)
        for a, b in zip(ours, theirs, strict=True):
            assert torch.allclose(a.k, b.k, atol=1e-5) and torch.allclose(a.q, b.q, atol=1e-5)
            assert torch.allclose(a.cls_attention, b.cls_attention, atol=1e-6)
    assert calls  # the trunk ran the model's own first block
