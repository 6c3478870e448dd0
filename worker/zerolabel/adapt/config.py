"""How to adapt a backbone: :class:`AdaptConfig`, every choice of a run in one frozen record.

The defaults are DINO's recipe for ViT-S/16 (``main_dino.py`` and its README) with the epochs
turned into fractions of the run, since a team's run is counted in steps: the learning rate
warms up over the first 10 % of the steps (DINO: 10 of 100 epochs), the teacher temperature
over the first 30 % (30 of 100), and the last layer of the head stays frozen for the first 1 %
(1 of 100). Video clips follow DoRA's published run (8 frames 60 frames apart, 3 objects).
No torch here: the command line builds and checks a config before anything heavy loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from zerolabel.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")
"""Training precisions: fp32, or the forward passes under ``torch.autocast``."""

RESUMABLE_FIELDS = frozenset(
    {"checkpoint_every", "checkpoint_seconds", "device", "grad_checkpointing"}
)
"""Fields a resumed run may change: none of them alters the weights a step computes on CPU."""


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run: backbone, schedules, crops, videos, checkpoints.

    ``AdaptConfig(backbone="dino_vits16", checkpoint="dino_deitsmall16_pretrain.pth",
    steps=2000, batch_size=32, device="cuda", precision="bf16")``
    """

    backbone: str = "dino_vits16"  # a name of zerolabel.vit.backbone.BACKBONES or a timm ViT
    checkpoint: str | None = None  # weights to start from; None: the hub tag (or random)
    random_weights: bool = False  # start from seeded random weights (benchmarks, tests)
    model_kwargs: Mapping[str, Any] | None = None  # architecture overrides (depth ...)
    pos_embed: str = "dino"  # positional-embedding interpolation: "dino" or "timm"
    offline: bool = False  # never download weights
    steps: int = 2000  # optimizer steps of the whole run (a resumed run continues up to this)
    batch_size: int = 16  # images or clips per step, over all processes
    lr: float = 0.0005  # peak learning rate for a batch of 256, scaled by batch_size / 256
    min_lr: float = 1e-6  # the cosine schedule's end
    warmup_fraction: float = 0.1  # linear learning-rate warm-up, share of the steps
    weight_decay: float = 0.04  # cosine from this...
    weight_decay_end: float = 0.4  # ...to this
    momentum: float = 0.996  # teacher EMA, cosine from this to 1
    out_dim: int = 65536  # prototypes of the projection head
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    norm_last_layer: bool = True  # weight-normalised last layer with its norms frozen at 1
    student_temp: float = 0.1
    teacher_temp: float = 0.07  # after the warm-up...
    warmup_teacher_temp: float = 0.04  # ...from this
    teacher_temp_fraction: float = 0.3  # warm-up of the teacher temperature, share of the steps
    center_momentum: float = 0.9
    freeze_last_layer_fraction: float = 0.01  # share of the steps the last layer does not learn
    clip_grad: float = 3.0  # largest gradient norm of each parameter; 0: no clipping
    drop_path: float = 0.1  # stochastic depth of the student's last block (linear over blocks)
    global_size: int = 224  # side of the two global crops, in pixels
    local_size: int = 96  # side of the local crops
    local_crops: int = 8  # local crops per image (per frame of a clip)
    global_scale: tuple[float, float] = (0.4, 1.0)  # area share of a global crop
    local_scale: tuple[float, float] = (0.05, 0.4)  # area share of a local crop
    clip_frames: int = 8  # frames of a video clip (DoRA)
    frame_step: int = 60  # frames between two frames of a clip (DoRA's published run)
    objects: int = 3  # attention heads, one tracked object each (DoRA's k)
    clip_scale: tuple[float, float] = (0.2, 1.0)  # DoRA's first crop of a clip, area share
    sinkhorn_iterations: int = 30
    sinkhorn_epsilon: float = 0.05
    max_side: int = 1024  # images and frames are shrunk to this longer side before cropping
    seed: int = 0  # head init, data order, crops, drop path, attention heads
    device: str = "cpu"
    precision: str = "fp32"
    grad_checkpointing: bool = False  # recompute each block in the backward pass
    checkpoint_every: int | None = None  # steps between checkpoints (None: off)
    checkpoint_seconds: float | None = 300.0  # wall time between checkpoints (None: off)

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "out_dim",
            "head_hidden_dim",
            "head_bottleneck_dim",
            "global_size",
            "local_size",
            "clip_frames",
            "frame_step",
            "objects",
            "sinkhorn_iterations",
            "max_side",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.local_crops < 0:
            raise ConfigError(f"local_crops must be 0 or more, got {self.local_crops}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds > 0:
            raise ConfigError(f"checkpoint_seconds must be positive, got {self.checkpoint_seconds}")
        self._check_ranges()
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.pos_embed not in ("dino", "timm"):
            raise ConfigError(f"pos_embed must be 'dino' or 'timm', not {self.pos_embed!r}")
        if self.random_weights and self.checkpoint is not None:
            raise ConfigError("random_weights and a checkpoint exclude each other")

    def _check_ranges(self) -> None:
        for name in ("warmup_fraction", "teacher_temp_fraction", "freeze_last_layer_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("momentum", "center_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path must lie in [0, 1), got {self.drop_path}")
        positive = ("lr", "student_temp", "teacher_temp", "warmup_teacher_temp", "sinkhorn_epsilon")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("min_lr", "weight_decay", "weight_decay_end", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("global_scale", "local_scale", "clip_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ConfigError(f"{name} must be (low, high) with 0 < low <= high <= 1")

    @property
    def peak_lr(self) -> float:
        """The learning rate at the end of the warm-up: DINO's linear scaling rule."""
        return self.lr * self.batch_size / 256.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_kwargs"] = dict(self.model_kwargs) if self.model_kwargs else None
        for name in ("global_scale", "local_scale", "clip_scale"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptConfig:
        """The config :meth:`to_dict` wrote (a checkpoint's)."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown AdaptConfig fields {sorted(unknown)}: newer zerolabel?")
        values = dict(data)
        for name in ("global_scale", "local_scale", "clip_scale"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def changes(self, other: AdaptConfig) -> list[str]:
        """The fields, other than :data:`RESUMABLE_FIELDS`, whose values differ, as
        ``name (old -> new)``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{name} ({mine[name]!r} -> {theirs[name]!r})"
            for name in mine
            if name not in RESUMABLE_FIELDS and mine[name] != theirs[name]
        ]
