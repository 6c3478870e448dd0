"""Seconds a discovery run spends per stage: what the pipeline records, the worker sums and the
metrics read (standard library only)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Timings:
    """Seconds spent per stage (accumulated over calls), and the images run."""

    preprocess_s: float = 0.0
    forward_s: float = 0.0
    method_s: float = 0.0
    refine_s: float = 0.0  # dense-CRF mask refinement (zerolabel.refine)
    images: int = 0

    def add(self, other: Timings) -> None:
        """Add every field of ``other`` to this record's (fields a subclass adds included)."""
        for field in dataclasses.fields(other):
            setattr(self, field.name, getattr(self, field.name, 0) + getattr(other, field.name))
