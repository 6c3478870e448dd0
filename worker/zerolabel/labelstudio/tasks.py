"""Discovery results -> Label Studio prediction JSON (standard library, numpy, zerolabel.geometry).

Label Studio 1.23 takes boxes as ``rectanglelabels`` results in percent of the original image
size, and masks as ``brushlabels`` results holding its brush RLE: the thi.ng ``rle-pack``
bitstream over the mask painted as an H x W x 4 RGBA byte image. This module writes both and
reads the brush format back; it must stay importable without torch or ``label_studio_ml``.

Brush bitstream (big-endian bit order, MSB first)::

    header   count of values (32 bits) | word size - 1 (5) | 4 x (run-length field size - 1) (4)
    token    repeat flag (1) | size selector (2) | run length - 1 (field size) | value(s)

A repeat token (flag 1) is followed by one value that fills the run; a literal token (flag 0)
by as many values as the run is long.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from zerolabel.contract import DiscoveryResult, Region
from zerolabel.geometry import rle_decode

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

WORD_BITS = 8
"""Bits per value in the brush stream: one RGBA channel byte."""

RLE_SIZES = (3, 4, 8, 16)
"""Widths of the run-length field that the 2-bit selector picks, as Label Studio writes them."""

_CHANNELS = 4  # RGBA
_LONGEST_PIECE = 1 << RLE_SIZES[-1]  # longest run one token can carry
_HEADER_TAIL_BITS = 5 + 4 * len(RLE_SIZES)
_HEADER_TAIL = (WORD_BITS - 1) << (4 * len(RLE_SIZES)) | sum(
    (size - 1) << (4 * (len(RLE_SIZES) - 1 - i)) for i, size in enumerate(RLE_SIZES)
)


@dataclass(frozen=True)
class Target:
    """Where pre-annotations go in a Label Studio project (names from its labeling config)."""

    to_name: str = "image"  # the <Image> tag
    data_key: str = "image"  # task data key holding the image URL ($image)
    box_from_name: str | None = "label"  # <RectangleLabels> control; None when absent
    brush_from_name: str | None = "mask"  # <BrushLabels> control; None when absent
    label: str = "object"  # label value for regions without a label of their own
    brush_label: str | None = None  # label for masks when set (the brush control's own labels)


# --- brush RLE -------------------------------------------------------------------------------


def brush_rle_encode(mask: BoolArray) -> list[int]:
    """Label Studio's brush RLE of a mask, painted white and opaque (all 4 channels 0 or 255).

    Byte-identical to ``label_studio_sdk.converter.brush.mask2rle(mask.astype(np.uint8) * 255)``,
    including its habit of always ending on a zero padding byte, but vectorised.

    Args:
        mask: [H, W] mask; nonzero means set.

    Returns:
        The stream as a list of byte values.

    Raises:
        ValueError: if the mask is not 2-D or has 2**30 pixels or more.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel()  # row-major, as the RGBA image is laid out
    num = flat.size * _CHANNELS
    if num >= 1 << 32:
        raise ValueError(f"mask of {flat.size} pixels is too large for the 32-bit brush header")
    starts = np.flatnonzero(np.concatenate(([flat.size > 0], flat[1:] != flat[:-1])))
    lengths = np.diff(np.append(starts, flat.size)) * _CHANNELS
    values = np.where(flat[starts], 255, 0).astype(np.int64)
    codes, nbits = _run_tokens(values, lengths)
    codes = np.concatenate(([num, _HEADER_TAIL], codes))
    nbits = np.concatenate(([32, _HEADER_TAIL_BITS], nbits))
    return cast(list[int], _pack_bits(codes, nbits).tolist())


def _run_tokens(values: IntArray, lengths: IntArray) -> tuple[IntArray, IntArray]:
    """Codes and bit counts of the tokens for runs of one value, as the sdk writes them.

    A run of length 1 becomes a one-value literal token, any longer run a repeat token with
    the narrowest length field that fits, except that runs longer than 256 always take the
    widest field: cut into pieces of 2**16, the last piece keeps it even when short.
    """
    selector = (lengths > 8).astype(np.int64) + (lengths > 16) + (lengths > 256)
    head = ((lengths > 1).astype(np.int64) << 2) | selector
    counts = lengths
    if lengths.size and lengths.max() > _LONGEST_PIECE:
        pieces = -(-lengths // _LONGEST_PIECE)
        last = np.cumsum(pieces) - 1
        values, selector, head = (np.repeat(a, pieces) for a in (values, selector, head))
        counts = np.full(values.size, _LONGEST_PIECE, dtype=np.int64)
        counts[last] = lengths - (pieces - 1) * _LONGEST_PIECE
    field = np.asarray(RLE_SIZES, dtype=np.int64)[selector]
    codes = (head << (field + WORD_BITS)) | ((counts - 1) << WORD_BITS) | values
    return codes, 3 + field + WORD_BITS


def _pack_bits(codes: IntArray, nbits: IntArray) -> npt.NDArray[np.uint8]:
    """Concatenate codes of up to 32 bits each, MSB first, into ``total bits // 8 + 1`` bytes.

    Like the sdk, this always pads: a whole zero byte when the bits already fill whole bytes.

    Each code is shifted into the 64-bit window of the 32-bit word where it starts and the
    next one; codes never share a bit, so OR-ing the windows of all codes is exact.
    """
    ends = np.cumsum(nbits)
    total = int(ends[-1])
    starts = ends - nbits
    word = starts >> 5
    window = codes.astype(np.uint64) << (64 - (starts & 31) - nbits).astype(np.uint64)
    first = np.flatnonzero(np.concatenate(([True], word[1:] != word[:-1])))
    words = np.zeros(total // 32 + 2, dtype=np.uint64)
    words[word[first]] = np.bitwise_or.reduceat(window >> np.uint64(32), first)
    words[word[first] + 1] |= np.bitwise_or.reduceat(window & np.uint64(0xFFFFFFFF), first)
    return words.astype(">u4").view(np.uint8)[: total // 8 + 1]


def brush_rle_decode(rle: list[int], hw: tuple[int, int], threshold: int = 0) -> BoolArray:
    """Mask of a Label Studio brush RLE, from its alpha channel.

    Reads any valid ``rle-pack`` stream, including the literal runs Label Studio's editor writes.

    Args:
        rle: the stream as byte values.
        hw: (height, width) of the original image.
        threshold: alpha values above it count as set; 0 matches what Label Studio draws.

    Returns:
        [H, W] bool mask.

    Raises:
        ValueError: if the stream is malformed or does not hold an H x W x 4 image.
    """
    h, w = hw
    num, values, lengths = _decode_runs(bytes(rle))
    if num != h * w * _CHANNELS:
        raise ValueError(f"brush RLE holds {num} values, expected {h}x{w}x4 = {h * w * 4}")
    # the alpha byte of pixel p is value 4p + 3: a run starting at value b starts at pixel b // 4
    bounds = np.append(np.cumsum(lengths) - lengths, num) // _CHANNELS
    alpha_set = np.asarray(values, dtype=np.int64) > threshold
    return np.repeat(alpha_set, np.diff(bounds)).reshape(h, w)


def _decode_runs(data: bytes) -> tuple[int, list[int], list[int]]:
    """Value count, then the value and length of every run of an ``rle-pack`` stream."""
    padded, limit = data + bytes(8), 8 * len(data)
    num = _bits(padded, 0, 32)
    word = _bits(padded, 32, 5) + 1
    sizes = [_bits(padded, 37 + 4 * i, 4) + 1 for i in range(4)]
    values: list[int] = []
    lengths: list[int] = []
    pos, done = 53, 0
    while done < num:
        # one 64-bit window holds a whole repeat token: 7 + 3 + 16 + 32 bits at most
        window = int.from_bytes(padded[pos >> 3 : (pos >> 3) + 8], "big")
        rest = 61 - (pos & 7)  # bits of the window after the 3-bit head
        head = (window >> rest) & 7
        size = sizes[head & 3]
        rest -= size
        n = ((window >> rest) & ((1 << size) - 1)) + 1
        pos += 3 + size
        if head >> 2:  # repeat: one value for the whole run
            values.append((window >> (rest - word)) & ((1 << word) - 1))
            lengths.append(n)
            pos += word
        else:  # literal: n values
            values.extend(_bits(padded, pos + k * word, word) for k in range(n))
            lengths.extend([1] * n)
            pos += n * word
        done += n
        if pos > limit:
            raise ValueError("brush RLE ends in the middle of a run (truncated stream?)")
    if done != num:
        raise ValueError(f"brush RLE runs cover {done} values, its header says {num}")
    return num, values, lengths


def _bits(padded: bytes, pos: int, nbits: int) -> int:
    """The ``nbits`` (at most 32) bits from bit ``pos`` on, read big-endian."""
    window = int.from_bytes(padded[pos >> 3 : (pos >> 3) + 5], "big")
    return (window >> (40 - (pos & 7) - nbits)) & ((1 << nbits) - 1)


# --- prediction JSON ------------------------------------------------------------------------


def regions_to_results(result: DiscoveryResult, target: Target) -> list[dict[str, Any]]:
    """Label Studio result items for every region: a box and, when it has a mask, a brush.

    Ids are ``zl-<hash of model_version>-<region index>-box|mask``: deterministic, unique
    within a task, and different for the box and the mask of one object.

    Args:
        result: the discovery output of one image.
        target: the labeling-config names to write to.

    Returns:
        The items of a prediction's ``result`` list.

    Raises:
        ValueError: if a region's mask does not have the image's size.
    """
    digest = hashlib.sha1(result.model_version.encode()).hexdigest()[:6]
    items: list[dict[str, Any]] = []
    for index, region in enumerate(result.regions):
        item = _Item(f"zl-{digest}-{index}", result, region, target)
        if target.box_from_name is not None:
            items.append(item.box(target.box_from_name))
        if target.brush_from_name is not None and region.mask is not None:
            items.append(item.brush(target.brush_from_name))
    return items


@dataclass(frozen=True)
class _Item:
    """Builds the result items of one region."""

    id_prefix: str
    result: DiscoveryResult
    region: Region
    target: Target

    @property
    def label(self) -> str:
        return self.region.label or self.target.label

    def box(self, from_name: str) -> dict[str, Any]:
        value = _box_percent(self.region, self.result.image_hw)
        value |= {"rotation": 0, "rectanglelabels": [self.label]}
        return self._envelope("box", from_name, "rectanglelabels") | {"value": value}

    def brush(self, from_name: str) -> dict[str, Any]:
        mask = self.region.mask
        assert mask is not None
        if mask.size_hw != self.result.image_hw:
            raise ValueError(
                f"{self.id_prefix}: mask is {mask.size_hw} but the image is "
                f"{self.result.image_hw} (height, width)"
            )
        rle = brush_rle_encode(rle_decode(mask))
        label = self.region.label or self.target.brush_label or self.target.label
        value = {"format": "rle", "rle": rle, "brushlabels": [label]}
        return self._envelope("mask", from_name, "brushlabels") | {"value": value}

    def _envelope(self, suffix: str, from_name: str, kind: str) -> dict[str, Any]:
        h, w = self.result.image_hw
        return {
            "id": f"{self.id_prefix}-{suffix}",
            "from_name": from_name,
            "to_name": self.target.to_name,
            "type": kind,
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            "score": float(self.region.score),
        }


def _box_percent(region: Region, image_hw: tuple[int, int]) -> dict[str, Any]:
    """Box as x, y, width, height in percent of the image (x over the width), clipped to it."""
    h, w = image_hw
    box = region.box
    x0, y0 = min(max(box.x0, 0.0), w), min(max(box.y0, 0.0), h)
    x, y = 100.0 * x0 / w, 100.0 * y0 / h
    width = min(100.0 * (min(box.x1, w) - x0) / w, 100.0 - x)
    height = min(100.0 * (min(box.y1, h) - y0) / h, 100.0 - y)
    return {"x": x, "y": y, "width": max(width, 0.0), "height": max(height, 0.0)}


def prediction(result: DiscoveryResult, target: Target) -> dict[str, Any]:
    """One Label Studio prediction: model version, task score and result items.

    Args:
        result: the discovery output of one image.
        target: the labeling-config names to write to.

    Returns:
        ``{"model_version", "score", "result"}``, as ``/predict`` answers and tasks import.
    """
    return {
        "model_version": result.model_version,
        "score": float(result.score),
        "result": regions_to_results(result, target),
    }


def task(result: DiscoveryResult, target: Target, image_url: str) -> dict[str, Any]:
    """An importable Label Studio task carrying its prediction.

    Args:
        result: the discovery output of one image.
        target: the labeling-config names to write to.
        image_url: what Label Studio should load, e.g. ``/data/local-files/?d=set1/a.png``.

    Returns:
        ``{"data": {target.data_key: image_url}, "predictions": [prediction]}``.
    """
    return {"data": {target.data_key: image_url}, "predictions": [prediction(result, target)]}
