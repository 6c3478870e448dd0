"""Build a timm Vision Transformer and give it weights (the only module that loads models).

Weights come from, in order of preference:
  * a local checkpoint file (``ZEROLABEL_CHECKPOINT``): the official DINO state dict, a DINO or
    DoRA training checkpoint (weights under ``teacher``), or a timm / safetensors file;
  * the timm pretrained tag of the backbone, from the local hub cache or downloaded.
A checkpoint that does not fit the architecture fails with the missing/unexpected keys named.
Offline intent stays local to the call: cached hub weights are looked up in the local cache and
handed to timm as a file, and nothing process-wide (environment, huggingface_hub flags) changes.

The named DINO backbones load from a checkpoint without timm (:mod:`zerolabel.vit.model`):
importing timm costs about two seconds of start-up. timm is imported only for what it alone
does: hub downloads, random initialisation, other ViT names and checkpoints that need its
conversions.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerolabel.checkpoints import load_fitting as load_fitting  # re-exported for callers
from zerolabel.checkpoints import read_checkpoint_file
from zerolabel.checkpoints import unwrap_state_dict as unwrap_state_dict
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.vit import model as native
from zerolabel.vit import precision as precisions

logger = logging.getLogger(__name__)

# Short names users type -> timm names (architecture.pretrained_tag).
BACKBONES: dict[str, str] = {
    "dino_vits16": "vit_small_patch16_224.dino",  # LOST / TokenCut default
    "dino_vits8": "vit_small_patch8_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dino_vitb8": "vit_base_patch8_224.dino",  # MaskCut / CutLER
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dora_vits16": "vit_small_patch16_224",  # DoRA: DINO-format checkpoint under "teacher"
}

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,  # no autocast
    "fp16": torch.float16,  # CUDA only
    "bf16": torch.bfloat16,  # CUDA, and CPUs with bf16 instructions (else fp32)
}
"""Forward-pass precisions: matmuls run under ``torch.autocast``. The weights stay fp32 except
the linear layers' in a bf16 pass on the CPU, which are stored in bf16 once; there, a CPU
without bf16 instructions runs fp32 instead (:mod:`zerolabel.vit.precision`)."""

_HUB_HOST = ("huggingface.co", 443)
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, in its order

HOW_TO_PROVIDE_WEIGHTS = (
    "Give a local checkpoint with --checkpoint PATH or ZEROLABEL_CHECKPOINT=PATH: the official "
    "DINO file (e.g. dino_deitsmall16_pretrain.pth), a DINO/DoRA training checkpoint (weights "
    "under 'teacher'), or a timm .safetensors/.pth file. With internet access the timm "
    "pretrained weights are downloaded instead."
)


@dataclass
class Backbone:
    """A ViT ready for feature extraction, with the facts the pipeline needs about it."""

    model: nn.Module  # zerolabel.vit.model.VisionTransformer, or timm's for other names
    name: str  # timm name
    weights_id: str  # hub tag or checkpoint digest: part of the model_version
    device: torch.device
    dtype: torch.dtype  # of the input batch and the weights (CPU bf16: linear ones in bf16)
    pos_embed: str  # "dino" or "timm" interpolation of positional embeddings
    autocast: torch.dtype | None = None  # run the forward pass under torch.autocast
    trunk: Callable[[torch.Tensor], torch.Tensor] | None = None  # compiled blocks[:-1]
    positions: dict[tuple[object, ...], torch.Tensor] = field(
        default_factory=dict, repr=False, compare=False
    )  # interpolated positional embeddings per grid (zerolabel.vit.features)

    def blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """All transformer blocks; the last one always runs eagerly (its qkv is hooked)."""
        model: Any = self.model
        if self.trunk is None:
            out: torch.Tensor = model.blocks(tokens)
            return out
        last: torch.Tensor = model.blocks[-1](self.trunk(tokens))
        return last

    @property
    def patch_size(self) -> int:
        model: Any = self.model
        size = model.patch_embed.patch_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def num_features(self) -> int:
        """Channels of the output tokens (the CLS descriptor's length)."""
        model: Any = self.model
        return int(model.num_features)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        model: Any = self.model
        cfg: dict[str, Any] = dict(model.pretrained_cfg)
        return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(
            cfg.get("std", (0.229, 0.224, 0.225))
        )


def resolve_name(backbone: str) -> str:
    """Short name or timm name -> timm name."""
    return BACKBONES.get(backbone, backbone)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    picked = torch.device(device)
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here")
    return picked


def load_backbone(
    backbone: str = "dino_vits16",
    *,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    half: bool = False,
    pos_embed: str = "dino",
    model_kwargs: Mapping[str, Any] | None = None,
    offline: bool = False,
    random_weights: bool = False,
    precision: str = "fp32",
    compile_mode: str | None = None,
) -> Backbone:
    """Build the ViT, load its weights and move it to the device in eval mode.

    Args:
        backbone: a key of :data:`BACKBONES` or any timm ViT name.
        checkpoint: local weights file; when None the timm pretrained tag is used.
        device: ``auto``, ``cpu``, ``cuda``...
        half: fp16 weights and activations (CUDA only); prefer ``precision="fp16"``.
        pos_embed: ``dino`` (DINO's interpolation rule, reproduces the papers) or ``timm``.
        model_kwargs: architecture overrides passed to ``timm.create_model`` (e.g. depth).
        offline: never try the network; only a checkpoint or the local hub cache.
        random_weights: seeded-by-caller random init, for benchmarks and tests.
        precision: a key of :data:`PRECISIONS`: ``fp16``/``bf16`` autocast the forward pass.
            bf16 on a CPU without bf16 instructions runs fp32 instead, with one log line
            (:mod:`zerolabel.vit.precision`).
        compile_mode: ``torch.compile`` all blocks but the last with this mode (``default``,
            ``reduce-overhead``, ``max-autotune``); None runs eagerly.
    """
    name = resolve_name(backbone)
    torch_device = pick_device(device)
    if half and torch_device.type != "cuda":
        raise ConfigError("half precision needs a CUDA device (ZEROLABEL_HALF / --half)")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and torch_device.type != "cuda":
        raise ConfigError("fp16 autocast needs a CUDA device (ZEROLABEL_PRECISION); use bf16")
    if pos_embed not in ("dino", "timm"):
        raise ConfigError(f"pos_embed must be 'dino' or 'timm', not {pos_embed!r}")
    kwargs = {"num_classes": 0, "dynamic_img_size": True, **(model_kwargs or {})}
    model: nn.Module
    if random_weights:
        model, weights_id = _random(name, kwargs), "random"
    elif checkpoint is not None:
        model, weights_id = _from_checkpoint(name, kwargs, checkpoint)
    else:
        model, weights_id = _from_hub(name, kwargs, offline=offline), f"hub:{name}"
    dtype = torch.float16 if half else torch.float32
    model = model.to(device=torch_device, dtype=dtype).eval().requires_grad_(False)
    autocast = None if half else precisions.autocast_dtype(PRECISIONS[precision], torch_device)
    if autocast is torch.bfloat16 and torch_device.type == "cpu":
        precisions.store_linear_weights(model, autocast)
    loaded = Backbone(model, name, weights_id, torch_device, dtype, pos_embed, autocast)
    if compile_mode is not None:
        loaded.trunk = compile_trunk(model, compile_mode)
    return loaded


def compile_trunk(
    model: Any, mode: str, backend: str = "inductor"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` of every block but the last (whose qkv the feature hook reads).

    Shapes are marked dynamic so that images of other sizes need not each compile anew.
    ``backend`` other than inductor (e.g. ``eager`` in tests) takes no mode.
    """
    trunk = torch.nn.Sequential(*list(model.blocks)[:-1])
    compiled: Callable[[torch.Tensor], torch.Tensor] = torch.compile(
        trunk, mode=mode if backend == "inductor" else None, dynamic=True, backend=backend
    )
    return compiled


def _random(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """timm's random initialisation (seeded by the caller), in the timm-free module when the
    architecture is one of :data:`zerolabel.vit.model.ARCHITECTURES`."""
    model = _create(name, False, kwargs)
    arch = native.architecture(name, kwargs)
    built = native.build(arch, model.state_dict()) if arch is not None else None
    return model if built is None else built


def _from_checkpoint(
    name: str, kwargs: Mapping[str, Any], path: str | Path
) -> tuple[nn.Module, str]:
    """The model with a checkpoint's weights, and the weights id: the file's digest.

    A named DINO architecture whose keys and shapes the file fits exactly is built without
    timm; anything else goes through timm's conversions (and its messages when it fails).
    """
    path = Path(path)
    arch = native.architecture(name, kwargs)
    timm_model = _create(name, False, kwargs) if arch is None else None  # a bad name first
    loaded = read_checkpoint_file(path, what="checkpoint", hint=HOW_TO_PROVIDE_WEIGHTS)
    state = unwrap_state_dict(loaded)
    built = native.build(arch, state) if arch is not None else None
    model: nn.Module
    if built is not None:
        model = built
    else:
        from timm.models.vision_transformer import checkpoint_filter_fn

        model = _create(name, False, kwargs) if timm_model is None else timm_model
        fitted = checkpoint_filter_fn(state, model)  # type: ignore[arg-type]  # timm conversions
        load_fitting(model, fitted, f"checkpoint {path.name} does not fit {_arch(model)}")
    return model, "file:" + _file_digest(path)


def _create(
    name: str, pretrained: bool, kwargs: Mapping[str, Any], *, weights_file: str | None = None
) -> nn.Module:
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(name.split(".")[0]):
        known = ", ".join(BACKBONES)
        raise ConfigError(f"unknown backbone {name!r}: use one of {known} or a timm ViT name")
    if weights_file is not None:  # timm loads (and converts) this file instead of the hub's
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": weights_file}}
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:  # e.g. a CNN refusing dynamic_img_size
        raise ConfigError(f"backbone {name!r} is not a timm ViT ({exc})") from None
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"backbone {name!r} is a {type(model).__name__}, not a timm ViT")
    return model


def _from_hub(name: str, kwargs: Mapping[str, Any], *, offline: bool) -> nn.Module:
    """Pretrained weights from the local hub cache, else a download when the hub answers."""
    if "." not in name:
        raise WeightsError(f"{name!r} has no pretrained tag to download. {HOW_TO_PROVIDE_WEIGHTS}")
    cached = cached_hub_weights(name)
    if cached is not None:
        try:
            return _create(name, True, kwargs, weights_file=cached)
        except (OSError, RuntimeError) as exc:
            logger.debug("cached weights %s for %s unusable: %s", cached, name, exc)
    if offline or not _hub_reachable():
        raise WeightsError(
            f"no weights for {name}: the model hub cannot be reached and nothing is cached. "
            + HOW_TO_PROVIDE_WEIGHTS
        )
    try:
        return _create(name, True, kwargs)
    except (OSError, RuntimeError) as exc:
        raise WeightsError(
            f"downloading weights for {name} failed ({exc}). {HOW_TO_PROVIDE_WEIGHTS}"
        ) from None


def cached_hub_weights(name: str) -> str | None:
    """The weights file of a timm ``architecture.tag`` already in the local hub cache, if any.

    A lookup in the cache folder only: it never touches the network and changes no setting.
    """
    import timm
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # a name timm does not know
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    repo, _, revision = str(hub_id).partition("@")
    filename = getattr(cfg, "hf_hub_filename", None)
    for candidate in (filename,) if filename else _HUB_FILES:
        found = try_to_load_from_cache(repo, candidate, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection(_HUB_HOST, timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _arch(model: Any) -> str:
    cfg: dict[str, Any] = dict(getattr(model, "default_cfg", {}))
    name = cfg.get("architecture", type(model).__name__)
    return f"{name} (depth {len(model.blocks)}, dim {model.embed_dim})"


def set_fused_attention(model: nn.Module, enabled: bool) -> None:
    """Switch every block between fused SDPA and explicit softmax(q kᵀ) v attention."""
    blocks: Any = model.blocks
    for block in blocks:
        block.attn.fused_attn = enabled
