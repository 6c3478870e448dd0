"""One training process's state and its step: models, optimizer, centre, and what a step does.

:class:`TrainingState` holds student and teacher (backbone and head), the optimizer, the
fp16 gradient scaler, the centre, the step and the losses; :meth:`TrainingState.prepare` reads
and crops a step's items, :meth:`TrainingState.train_step` runs the teacher, masks the clips to
the objects it tracks, runs the student and takes one AdamW step, then moves the teacher (EMA)
and the centre. Every random choice comes from a generator seeded by the seed and what it is
for (:func:`seeded`): the data order per epoch, each item's views and drop path by the
item's position in the whole run, the attention heads by the step.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zerolabel.adapt import schedules
from zerolabel.adapt.config import AdaptConfig
from zerolabel.adapt.crops import CropSettings
from zerolabel.adapt.data import Inputs, Item, read_clip, read_image
from zerolabel.adapt.ddp import Distributed
from zerolabel.adapt.dino import (
    DinoHead,
    batch_center,
    cancel_last_layer,
    clip_gradients,
    distillation_loss,
    ema_update,
    next_center,
    param_groups,
    teacher_probabilities,
)
from zerolabel.adapt.memory import check, free_bytes, step_memory
from zerolabel.adapt.network import StudentNet, check_trainable, teacher_forward
from zerolabel.adapt.saving import export, metadata
from zerolabel.adapt.views import Plan, Shape, plan, student_views
from zerolabel.errors import ConfigError
from zerolabel.io.images import ImageLimits
from zerolabel.vit import precision as precisions
from zerolabel.vit.backbone import Backbone, load_backbone


def seed_of(*parts: object) -> int:
    """A 63-bit seed from any values (no two lists of parts share one, in practice)."""
    text = "/".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


def seeded(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(*parts))


@dataclass
class TrainingState:
    """Everything one training process works on."""

    config: AdaptConfig
    inputs: Inputs
    device: torch.device
    place: Distributed
    limits: ImageLimits
    backbone: Backbone
    student: StudentNet
    teacher: StudentNet
    trained: nn.Module  # the student, wrapped for several processes
    optimizer: torch.optim.Optimizer
    scaler: Any
    autocast: torch.dtype | None
    shape: Shape
    center: Tensor
    base_weights: str = ""
    step: int = 0
    losses: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    _order: tuple[int, Tensor] | None = None

    @classmethod
    def build(
        cls,
        config: AdaptConfig,
        inputs: Inputs,
        device: torch.device,
        place: Distributed,
        saved: dict[str, Any] | None,
        limits: ImageLimits,
    ) -> TrainingState:
        backbone = _load(config, device, fresh=saved is None)
        model: Any = backbone.model
        check_trainable(model)
        _check_sizes(config, backbone, int(model.blocks[-1].attn.num_heads))
        student_backbone = model.train().requires_grad_(True)
        head = DinoHead(
            backbone.num_features,
            config.out_dim,
            hidden_dim=config.head_hidden_dim,
            bottleneck_dim=config.head_bottleneck_dim,
            norm_last_layer=config.norm_last_layer,
            generator=seeded(config.seed, "head"),
        )
        student = StudentNet(
            student_backbone,
            head,
            pos_embed=config.pos_embed,
            checkpointing=config.grad_checkpointing,
        ).to(device)
        teacher = copy.deepcopy(student).eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(param_groups(student))
        run = cls(
            config=config,
            inputs=inputs,
            device=device,
            place=place,
            limits=limits,
            backbone=backbone,
            student=student,
            teacher=teacher,
            trained=place.wrap(student, device),
            optimizer=optimizer,
            scaler=_scaler(config, device),
            autocast=_autocast_dtype(config, device),
            shape=_shape(config, backbone, len(model.blocks)),
            center=torch.zeros(1, config.out_dim, device=device),
            base_weights=backbone.weights_id,
        )
        if saved is not None:
            run.restore(saved)
        return run

    def restore(self, saved: dict[str, Any]) -> None:
        self.student.load_state_dict(saved["student"])
        self.teacher.load_state_dict(saved["teacher_net"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.center = saved["center"].to(self.device)
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.step, self.losses = int(saved["step"]), list(saved["losses"])
        self.base_weights = str(saved["base_weights"])
        self.elapsed_s = float(saved.get("elapsed_s", 0.0))

    def state(self) -> dict[str, Any]:
        """What :func:`~zerolabel.adapt.saving.save_checkpoint` writes."""
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "inputs": self.inputs.digest,
            "base_weights": self.base_weights,
            "teacher": self.teacher.backbone.state_dict(),  # what backbone loaders look for
            "teacher_net": self.teacher.state_dict(),
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center": self.center.detach().cpu(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "losses": list(self.losses),
            "elapsed_s": self.elapsed_s,
        }

    # --- one step -----------------------------------------------------------------------------

    def items(self, step: int) -> list[tuple[int, Item]]:
        """This process's items of ``step``: (position in the whole run, item)."""
        size = self.config.batch_size
        picked = []
        for slot in self.place.share(size):
            position = step * size + slot
            epoch, index = divmod(position, len(self.inputs))
            picked.append((position, self.inputs.item(int(self._permutation(epoch)[index]))))
        return picked

    def _permutation(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            generator = seeded(self.config.seed, "epoch", epoch)
            self._order = (epoch, torch.randperm(len(self.inputs), generator=generator))
        return self._order[1]

    def pixels(self, item: Item) -> Tensor:
        if item.image is not None:
            return read_image(item.image, self.limits, self.config.max_side)
        assert item.video is not None
        return read_clip(item.video, item.start, self.config.clip_frames, self.config.max_side)

    def prepare(self, step: int, pool: Executor | None = None) -> Plan:
        """The views of this process's items of ``step`` (read and drawn in ``pool``)."""

        def one(picked: tuple[int, Item]) -> Plan:
            position, item = picked
            generator = seeded(self.config.seed, "item", position)
            return plan([self.pixels(item)], [generator], self.shape)

        picked = self.items(step)
        done = pool.map(one, picked) if pool is not None else map(one, picked)
        return Plan(self.shape, [item for part in done for item in part.items])

    def train_step(self, step: int, prepared: Plan | None = None) -> float:
        """One optimizer step on ``prepared`` (else :meth:`prepare`'s) views; returns its loss
        (the mean over all processes)."""
        config = self.config
        for index, group in enumerate(self.optimizer.param_groups):
            group["lr"] = schedules.learning_rate(config, step)
            if index == 0:  # only weights are decayed
                group["weight_decay"] = schedules.weight_decay(config, step)
        views = (prepared or self.prepare(step)).to(self.device)
        heads = torch.randperm(self.heads, generator=seeded(config.seed, "heads", step))
        with self._autocast():
            teacher = teacher_forward(
                self.teacher.backbone,
                self.teacher.head,
                views.teacher_views,
                pos_embed=config.pos_embed,
            )
            inputs = student_views(views, teacher, heads[: config.objects])
            logits = self.trained(
                inputs.global_views, inputs.local_views, inputs.global_scales, inputs.local_scales
            )
        targets = teacher_probabilities(
            teacher.logits, self.center, schedules.teacher_temperature(config, step)
        )
        loss = distillation_loss(
            logits, targets, inputs.pairs, inputs.weights, student_temp=config.student_temp
        )
        self._update(loss, step)
        total, count = batch_center(teacher.logits)
        self.center = next_center(
            self.center, self.place.sum(total), self.place.sum(count), config.center_momentum
        )
        mean = self.place.sum(loss.detach().float().reshape(1)) / self.place.world_size
        return float(mean.item())

    @property
    def heads(self) -> int:
        model: Any = self.backbone.model
        return int(model.blocks[-1].attn.num_heads)

    def _update(self, loss: Tensor, step: int) -> None:
        if self.place.any(not math.isfinite(loss.item()), self.device):
            raise FloatingPointError(
                f"the loss is not finite at step {step}: lower --lr, or use fp32 (--precision)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            torch.autograd.backward(loss)
        if self.config.clip_grad:
            clip_gradients(self.student.parameters(), self.config.clip_grad)
        if schedules.last_layer_frozen(self.config, step):
            cancel_last_layer(self.student.head)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        ema_update(self.teacher, self.student, schedules.teacher_momentum(self.config, step))

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    # --- before and after ---------------------------------------------------------------------

    def check_memory(self) -> None:
        """Refuse a step that does not fit in the device's free memory."""
        items = self.config.batch_size // self.place.world_size
        frames, objects = self.config.clip_frames, self.config.objects
        local = self.config.local_crops
        per_item = (frames * objects, frames * local) if self.inputs.videos else (2, local)
        views = (per_item[0] * items, per_item[1] * items)
        need = step_memory(
            self.student,
            global_size=self.config.global_size,
            local_size=self.config.local_size,
            views=views,
            out_dim=self.config.out_dim,
            device=self.device,
            autocast=self.autocast,
        )
        checkpointing = self.config.grad_checkpointing
        check(need, free_bytes(self.device), items=items, checkpointing=checkpointing)

    def export(self, out_dir: Path, command: Sequence[str] | None) -> Path:
        """The adapted weights (the teacher's backbone) and their metadata."""
        inputs = {
            "digest": self.inputs.digest,
            "images": len(self.inputs.images),
            "videos": len(self.inputs.videos),
            "clips": len(self.inputs) - len(self.inputs.images),
        }
        described = metadata(
            self.config,
            backbone_name=self.backbone.name,
            backbone=self.teacher.backbone,
            base_weights=self.base_weights,
            inputs=inputs,
            losses=self.losses,
            command=command,
            world_size=self.place.world_size,
            elapsed_s=self.elapsed_s,
        )
        return export(self.teacher.backbone, out_dir, described)


def _load(config: AdaptConfig, device: torch.device, *, fresh: bool) -> Backbone:
    """The backbone with its starting weights (a resumed run's come from its checkpoint)."""
    random_weights = config.random_weights or not fresh
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of(config.seed, "backbone"))
        return load_backbone(
            config.backbone,
            checkpoint=None if random_weights else config.checkpoint,
            device=str(device),
            pos_embed=config.pos_embed,
            model_kwargs=config.model_kwargs,
            offline=config.offline,
            random_weights=random_weights,
        )


def _check_sizes(config: AdaptConfig, backbone: Backbone, heads: int) -> None:
    patch = backbone.patch_size
    for name in ("global_size", "local_size"):
        if getattr(config, name) % patch:
            raise ConfigError(
                f"{name.replace('_', '-')} {getattr(config, name)} is not a multiple of the "
                f"backbone's {patch} px patches"
            )
    if config.objects > heads:
        raise ConfigError(
            f"--objects {config.objects}: the backbone has {heads} attention heads, one per "
            "tracked object at most"
        )


def _shape(config: AdaptConfig, backbone: Backbone, depth: int) -> Shape:
    mean, std = backbone.mean_std
    crops = CropSettings(
        global_size=config.global_size,
        local_size=config.local_size,
        local_crops=config.local_crops,
        global_scale=config.global_scale,
        local_scale=config.local_scale,
        clip_scale=config.clip_scale,
        mean=mean,
        std=std,
    )
    return Shape(
        crops,
        objects=config.objects,
        depth=depth,
        drop_path=config.drop_path,
        sinkhorn_epsilon=config.sinkhorn_epsilon,
        sinkhorn_iterations=config.sinkhorn_iterations,
    )


def _autocast_dtype(config: AdaptConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("fp16 training needs a CUDA device: use --precision bf16 or fp32")
        return torch.float16
    if config.precision == "bf16":
        return precisions.autocast_dtype(torch.bfloat16, device)
    return None


def _scaler(config: AdaptConfig, device: torch.device) -> Any:
    """fp16 needs its gradients scaled (bf16 and fp32 do not)."""
    if config.precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
