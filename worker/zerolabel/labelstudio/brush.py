"""Label Studio's brush RLE (numpy and zerolabel.geometry only).

Label Studio 1.23 stores a ``brushlabels`` mask as the thi.ng ``rle-pack`` bitstream over the
mask painted as an H x W x 4 RGBA byte image, row-major. This module writes and reads it,
from and to a pixel array or straight from and to a COCO :class:`~zerolabel.contract.Rle`
(column-major): the Rle path goes through the runs only (:func:`zerolabel.geometry.
transpose_runs`), so a 12-megapixel mask never becomes a 12-megapixel array.

Bitstream (big-endian bit order, MSB first)::

    header   count of values (32 bits) | word size - 1 (5) | 4 x (run-length field size - 1) (4)
    token    repeat flag (1) | size selector (2) | run length - 1 (field size) | value(s)

A repeat token (flag 1) is followed by one value that fills the run; a literal token (flag 0)
by as many values as the run is long.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt

from zerolabel.contract import Rle
from zerolabel.geometry import rle_from_runs, rle_runs, transpose_runs

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

# --- writing -------------------------------------------------------------------------------


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
    edges = np.flatnonzero(np.diff(flat, prepend=False, append=False)).astype(np.int64)
    return _encode_set_runs(edges[0::2], edges[1::2], flat.size)


def rle_to_brush_rle(rle: Rle) -> list[int]:
    """Label Studio's brush RLE of an Rle mask, without building its pixel array.

    Byte-identical to ``brush_rle_encode(rle_decode(rle))``.

    Raises:
        ValueError: if the mask has 2**30 pixels or more.
    """
    h, w = rle.size_hw
    starts, ends = rle_runs(rle)
    # the column-major runs of an [H, W] mask are the row-major runs of its [W, H] transpose
    row_starts, row_ends = transpose_runs(starts, ends, (w, h))
    return _encode_set_runs(row_starts, row_ends, h * w)


def _encode_set_runs(starts: IntArray, ends: IntArray, n_pixels: int) -> list[int]:
    """The stream of a mask given by its row-major set runs (increasing, not touching)."""
    num = n_pixels * _CHANNELS
    if num >= 1 << 32:
        raise ValueError(f"mask of {n_pixels} pixels is too large for the 32-bit brush header")
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, n_pixels
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    lengths = np.diff(bounds) * _CHANNELS
    values = np.zeros(lengths.size, dtype=np.int64)
    values[1::2] = 255
    present = lengths > 0  # no empty first or last run of unset pixels
    codes, nbits = _run_tokens(values[present], lengths[present])
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


# --- reading -------------------------------------------------------------------------------


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
    starts, ends = _alpha_runs(rle, hw, threshold)
    toggles = np.zeros(h * w + 1, dtype=np.int8)
    toggles[starts], toggles[ends] = 1, -1
    return np.cumsum(toggles[:-1], dtype=np.int8).astype(bool).reshape(h, w)


def brush_rle_to_rle(rle: list[int], hw: tuple[int, int], threshold: int = 0) -> Rle:
    """The mask of a Label Studio brush RLE as a COCO Rle, without building its pixel array.

    Equal to ``rle_encode(brush_rle_decode(rle, hw, threshold))``; see
    :func:`brush_rle_decode` for the arguments.

    Raises:
        ValueError: if the stream is malformed or does not hold an H x W x 4 image.
    """
    starts, ends = _alpha_runs(rle, hw, threshold)
    return rle_from_runs(*transpose_runs(starts, ends, hw), hw)


def _alpha_runs(rle: list[int], hw: tuple[int, int], threshold: int) -> tuple[IntArray, IntArray]:
    """Row-major set runs (pixel starts and ends) of the alpha channel of a brush stream."""
    h, w = hw
    num, values, lengths = _decode_runs(bytes(rle))
    if num != h * w * _CHANNELS:
        raise ValueError(f"brush RLE holds {num} values, expected {h}x{w}x4 = {h * w * 4}")
    # the alpha byte of pixel p is value 4p + 3, so the run of values [b, e) holds the alpha
    # of pixels [b // 4, e // 4): none when it lies within one pixel's other channels
    bounds = np.cumsum(np.asarray([0, *lengths], dtype=np.int64)) // _CHANNELS
    holds_alpha = bounds[1:] > bounds[:-1]
    first_pixel = bounds[:-1][holds_alpha]
    alpha_set = (np.asarray(values, dtype=np.int64) > threshold)[holds_alpha]
    change = np.diff(alpha_set.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    edges = np.append(first_pixel, h * w)[change != 0]  # where the alpha turns on or off
    return edges[0::2], edges[1::2]


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
