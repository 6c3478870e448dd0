"""Wire types shared by the backend, the workers and the CLI (standard library only).

Everything that crosses Redis or lands in a file is one of these dataclasses turned into plain
JSON-ready dicts with ``to_dict`` / ``from_dict``. Coordinates are original-image pixels,
x to the right and y down, with ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in original-image pixels; ``x1`` and ``y1`` are exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def to_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]

    @classmethod
    def from_list(cls, xyxy: list[float]) -> Box:
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        return cls(x0, y0, x1, y1)


@dataclass(frozen=True)
class Rle:
    """Uncompressed COCO run-length encoding of a binary mask.

    ``counts`` alternates runs of 0 and 1 over the mask flattened in column-major order,
    starting with a (possibly empty) run of 0. It feeds both the COCO export and Label Studio's
    brush format.
    """

    size_hw: tuple[int, int]
    counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size_hw), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rle:
        h, w = data["size"]
        return cls((int(h), int(w)), [int(c) for c in data["counts"]])


@dataclass(frozen=True)
class Region:
    """One discovered object."""

    box: Box
    score: float  # method confidence in [0, 1]
    method: str  # key of worker.discovery.METHODS
    mask: Rle | None = None
    label: str | None = None  # pseudo-class name once clustered

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.to_list(),
            "score": self.score,
            "method": self.method,
            "mask": self.mask.to_dict() if self.mask else None,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        mask = data.get("mask")
        return cls(
            box=Box.from_list(data["box"]),
            score=float(data["score"]),
            method=str(data["method"]),
            mask=Rle.from_dict(mask) if mask else None,
            label=data.get("label"),
        )


@dataclass(frozen=True)
class DiscoveryResult:
    """All regions found in one image, or the reason there are none."""

    source: str  # path or URL the image came from
    image_hw: tuple[int, int]  # original size, after EXIF orientation
    regions: list[Region] = field(default_factory=list)
    model_version: str = ""
    task_id: int | None = None
    error: str | None = None  # set when the image could not be processed

    @property
    def score(self) -> float:
        """Task-level score: the best region's score (0 without regions)."""
        return max((r.score for r in self.regions), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "source": self.source,
            "image_hw": list(self.image_hw),
            "regions": [r.to_dict() for r in self.regions],
            "model_version": self.model_version,
            "task_id": self.task_id,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoveryResult:
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(
                f"result schema {data.get('schema')!r} is not {SCHEMA_VERSION}: "
                "backend and workers run different zerolabel versions"
            )
        h, w = data["image_hw"]
        return cls(
            source=str(data["source"]),
            image_hw=(int(h), int(w)),
            regions=[Region.from_dict(r) for r in data["regions"]],
            model_version=str(data["model_version"]),
            task_id=data.get("task_id"),
            error=data.get("error"),
        )
