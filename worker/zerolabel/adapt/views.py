"""One step's views, and which teacher view each student view learns from.

An image gives DINO's views: the teacher sees its two global crops, the student sees them too
plus the local crops, and each teacher view teaches every student view but itself (2 + 2N
terms, each weighing the same). A clip gives DoRA's: the teacher sees each frame's global view
unmasked, the student sees it masked to each tracked object (``objects`` views per frame) plus
the frame's local crops, and each frame's loss is half the mean over its masked views and half
the mean over its local crops, the clip's loss the mean over its frames. Every item weighs the
same in the step's loss, whatever its kind.

Views are built in two passes: :func:`plan` draws everything random from each item's generator
(crops, then the drop-path factors of its student views); once the teacher has seen its views,
:func:`student_views` masks the clips' frames with what the teacher tracked
(:func:`zerolabel.adapt.dora.track`) and gathers the student's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from zerolabel.adapt import dora
from zerolabel.adapt.crops import CropSettings, clip_views, image_views
from zerolabel.adapt.network import TeacherOutput, drop_path_scales


@dataclass(frozen=True)
class Shape:
    """What the views need from the config and the backbone."""

    crops: CropSettings
    objects: int  # tracked objects per clip (DoRA's k)
    depth: int  # blocks of the backbone (drop-path factors per block)
    drop_path: float
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 30


@dataclass
class _Item:
    teacher: Tensor  # [2 or F, 3, G, G]
    local: Tensor  # [n, 3, L, L]
    is_clip: bool
    global_scales: Tensor  # [depth, students, 2]
    local_scales: Tensor  # [depth, n, 2]


@dataclass
class Plan:
    """A step's views before the teacher's pass."""

    shape: Shape
    items: list[_Item] = field(default_factory=list)

    @property
    def teacher_views(self) -> Tensor:
        """[T, 3, G, G]: every item's teacher views, in item order."""
        return torch.cat([item.teacher for item in self.items])

    def to(self, device: torch.device) -> Plan:
        """The same views on ``device``."""
        moved = [
            _Item(
                item.teacher.to(device),
                item.local.to(device),
                item.is_clip,
                item.global_scales.to(device),
                item.local_scales.to(device),
            )
            for item in self.items
        ]
        return Plan(self.shape, moved)


@dataclass(frozen=True)
class StudentViews:
    """The student's inputs and the loss pairs of a step.

    global_views: [Sg, 3, G, G]. local_views: [Sl, 3, L, L]. Scales: drop-path factors
    [depth, S, 2]. pairs: [P, 2] (teacher view, student view; local views are numbered after
    the global ones). weights: [P], summing to 1 per item, divided by the items.
    """

    global_views: Tensor
    local_views: Tensor
    global_scales: Tensor
    local_scales: Tensor
    pairs: Tensor
    weights: Tensor


def plan(pixels: list[Tensor], generators: list[torch.Generator], shape: Shape) -> Plan:
    """Draw every item's views and drop-path factors.

    Args:
        pixels: per item, [3, H, W] for an image or [F, 3, H, W] for a clip, float in [0, 1].
        generators: per item, where its random choices come from.
        shape: sizes and counts.
    """
    step = Plan(shape)
    for item, generator in zip(pixels, generators, strict=True):
        is_clip = item.ndim == 4
        if is_clip:
            teacher, local = clip_views(item, generator, shape.crops)
            local = local.flatten(0, 1)
            students = teacher.shape[0] * shape.objects
        else:
            teacher, local = image_views(item, generator, shape.crops)
            students = teacher.shape[0]
        scales = drop_path_scales(
            generator, students + local.shape[0], shape.depth, shape.drop_path
        )
        step.items.append(
            _Item(teacher, local, is_clip, scales[:, :students], scales[:, students:])
        )
    return step


def student_views(step: Plan, teacher: TeacherOutput, heads: Tensor) -> StudentViews:
    """The student's views (clip frames masked to the objects the teacher tracks) and pairs.

    Args:
        step: from :func:`plan`.
        teacher: the teacher's pass over ``step.teacher_views``.
        heads: [objects] the heads that discover objects this step.
    """
    masked = _masked_clips(step, teacher, heads)
    device = teacher.logits.device
    global_views, local_views, pairs, weights = [], [], [], []
    offsets = _Offsets()
    n_global = sum(_student_count(item, step.shape) for item in step.items)
    for item in step.items:
        if item.is_clip:
            views = masked.pop(0).flatten(0, 1)  # [F * k, 3, G, G], frame-major
            terms = _clip_pairs(item, step.shape.objects, offsets, n_global)
        else:
            views = item.teacher
            terms = _image_pairs(item, offsets, n_global)
        global_views.append(views)
        local_views.append(item.local)
        pairs += [pair for pair, _ in terms]
        weights += [weight / len(step.items) for _, weight in terms]
        offsets.advance(item.teacher.shape[0], views.shape[0], item.local.shape[0])
    return StudentViews(
        global_views=torch.cat(global_views),
        local_views=torch.cat(local_views),
        global_scales=torch.cat([item.global_scales for item in step.items], dim=1),
        local_scales=torch.cat([item.local_scales for item in step.items], dim=1),
        pairs=torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2),
        weights=torch.tensor(weights, dtype=torch.float32, device=device),
    )


def _student_count(item: _Item, shape: Shape) -> int:
    return item.teacher.shape[0] * (shape.objects if item.is_clip else 1)


@dataclass
class _Offsets:
    teacher: int = 0
    student: int = 0
    local: int = 0

    def advance(self, teacher: int, student: int, local: int) -> None:
        self.teacher += teacher
        self.student += student
        self.local += local


def _image_pairs(item: _Item, at: _Offsets, n_global: int) -> list[tuple[tuple[int, int], float]]:
    """DINO: each global teacher view teaches the other global view and every local view."""
    locals_ = [n_global + at.local + j for j in range(item.local.shape[0])]
    pairs = [(at.teacher, at.student + 1), (at.teacher + 1, at.student)]
    pairs += [(at.teacher + t, local) for t in (0, 1) for local in locals_]
    return [(pair, 1.0 / len(pairs)) for pair in pairs]


def _clip_pairs(
    item: _Item, objects: int, at: _Offsets, n_global: int
) -> list[tuple[tuple[int, int], float]]:
    """DoRA: each frame teaches its masked views (half) and its local crops (half)."""
    frames = item.teacher.shape[0]
    per_frame = item.local.shape[0] // frames
    mask_share = 0.5 if per_frame else 1.0
    terms: list[tuple[tuple[int, int], float]] = []
    for f in range(frames):
        teacher = at.teacher + f
        for k in range(objects):
            student = at.student + f * objects + k
            terms.append(((teacher, student), mask_share / (frames * objects)))
        for j in range(per_frame):
            local = n_global + at.local + f * per_frame + j
            terms.append(((teacher, local), 0.5 / (frames * per_frame)))
    return terms


def _masked_clips(step: Plan, teacher: TeacherOutput, heads: Tensor) -> list[Tensor]:
    """Per clip item, [F, k, 3, G, G]: its frames masked to each tracked object."""
    starts, offset = [], 0
    for item in step.items:
        if item.is_clip:
            starts.append((offset, item))
        offset += item.teacher.shape[0]
    if not starts:
        return []
    device = teacher.keys.device
    first = torch.tensor([start for start, _ in starts], device=device)
    frames = starts[0][1].teacher.shape[0]
    every = first[:, None] + torch.arange(frames, device=device)[None]  # [C, F]
    keys = teacher.keys[every.flatten()].reshape(len(starts), frames, *teacher.keys.shape[1:])
    masks = dora.track(
        teacher.cls_attention[first],
        teacher.queries[first],
        teacher.tokens[first],
        keys,
        heads.to(device),
        teacher.grid_hw,
        epsilon=step.shape.sinkhorn_epsilon,
        iterations=step.shape.sinkhorn_iterations,
    )  # [C, F, k, h, w]
    views = torch.stack([item.teacher for _, item in starts])  # [C, F, 3, G, G]
    flat = dora.masked_views(views.flatten(0, 1), masks.flatten(0, 1))  # [C*F, k, 3, G, G]
    return list(flat.reshape(len(starts), frames, *flat.shape[1:]).unbind(0))
