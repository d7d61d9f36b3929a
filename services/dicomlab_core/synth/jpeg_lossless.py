"""A small JPEG Lossless encoder (ITU T.81 process 14, first-order prediction: DICOM's SV1 syntax).

JPEG Lossless SV1 (1.2.840.10008.1.2.4.70) is the most common compressed syntax in CR/DX archives,
but neither pydicom nor pylibjpeg can *encode* it. It is simple enough to write vectorised with
numpy: predictor 1 (the pixel to the left; the pixel above in the first column), one Huffman table
built from the image's own difference categories, 0xFF byte stuffing. The result decodes with
pylibjpeg-libjpeg, GDCM, DCMTK and the browser codecs.
"""

from __future__ import annotations

import heapq
import logging
import struct

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

MAX_CODE_LENGTH = 16


def _differences(image: npt.NDArray[np.integer], precision: int) -> npt.NDArray[np.int32]:
    """Prediction residuals of predictor 1 (T.81 H.1.2.1), row by row from the top-left pixel."""
    pixels = image.astype(np.int32)
    predicted = np.empty_like(pixels)
    predicted[:, 1:] = pixels[:, :-1]  # Ra, the pixel to the left
    predicted[1:, 0] = pixels[:-1, 0]  # first column: Rb, the pixel above
    predicted[0, 0] = 1 << (precision - 1)
    diff = pixels - predicted
    # residuals are taken modulo 2**16 into the range -32767..32768 (T.81 H.1.2.2)
    diff = ((diff + 32768) % 65536) - 32768
    return diff.ravel()


def _category(diff: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """SSSS: the number of bits of |diff| (0 for 0)."""
    magnitude = np.abs(diff)
    category = np.zeros(diff.shape, dtype=np.int32)
    nonzero = magnitude > 0
    category[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int32) + 1
    return category


def _code_lengths(counts: dict[int, int]) -> dict[int, int]:
    """Huffman code lengths for the symbols present, plus a reserved all-ones code (T.81 K.2)."""
    reserved = -1
    heap: list[tuple[int, int, list[int]]] = [(count, symbol, [symbol]) for symbol, count in counts.items()]
    heap.append((0, reserved, [reserved]))  # keeps the all-ones code word out of use
    heapq.heapify(heap)
    lengths = {symbol: 0 for _, symbol, _ in heap}
    tie = 1000
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for symbol in s1 + s2:
            lengths[symbol] += 1
        tie += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
    if max(lengths.values()) > MAX_CODE_LENGTH:  # cannot happen with at most 17 symbols + 1
        raise ValueError("Huffman code longer than 16 bits")
    lengths.pop(reserved)
    return lengths


def _canonical(lengths: dict[int, int]) -> tuple[list[int], list[int], dict[int, tuple[int, int]]]:
    """The DHT counts per length, the symbols in code order, and symbol -> (code, length)."""
    ordered = sorted(lengths, key=lambda symbol: (lengths[symbol], symbol))
    counts = [0] * MAX_CODE_LENGTH
    codes: dict[int, tuple[int, int]] = {}
    code, previous = 0, 0
    for symbol in ordered:
        length = max(1, lengths[symbol])
        code <<= length - previous
        codes[symbol] = (code, length)
        counts[length - 1] += 1
        code += 1
        previous = length
    return counts, ordered, codes


def _pack_bits(word: npt.NDArray[np.int64], width: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """Concatenate the low ``width`` bits of every word, most significant first; pad with 1 bits.

    Each word (at most 32 bits) lands in one or two big-endian 64-bit slots at its bit offset; words
    never overlap, so adding them into the slots is the same as OR-ing them.
    """
    total = int(width.sum())
    start = np.cumsum(width) - width
    slot, end = start >> 6, (start & 63) + width
    value = word.astype(np.uint64)
    slots = np.zeros(total // 64 + 2, dtype=np.uint64)
    fits = end <= 64
    np.add.at(slots, slot[fits], value[fits] << (64 - end[fits]).astype(np.uint64))
    split = ~fits
    over = (end[split] - 64).astype(np.uint64)
    np.add.at(slots, slot[split], value[split] >> over)
    np.add.at(slots, slot[split] + 1, value[split] << (np.uint64(64) - over))
    packed = np.frombuffer(slots.astype(">u8").tobytes(), dtype=np.uint8)[:(total + 7) // 8].copy()
    pad = (-total) % 8
    if pad:
        packed[-1] |= (1 << pad) - 1
    return packed


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def encode_jpeg_lossless(image: npt.NDArray[np.integer], precision: int) -> bytes:
    """One grayscale frame (rows x columns, unsigned, ``precision`` bits) as a JPEG Lossless SV1 stream."""
    if image.ndim != 2 or not 2 <= precision <= 16:
        raise ValueError("expected one 2-D grayscale frame with 2..16 bits")
    rows, columns = image.shape
    diff = _differences(image, precision)
    category = _category(diff)
    present, frequency = np.unique(category, return_counts=True)
    lengths = _code_lengths({int(s): int(c) for s, c in zip(present, frequency, strict=True)})
    counts, ordered, codes = _canonical(lengths)
    code_of = np.zeros(17, dtype=np.int64)
    length_of = np.zeros(17, dtype=np.int64)
    for symbol, (code, length) in codes.items():
        code_of[symbol], length_of[symbol] = code, length
    # additional bits: the low SSSS bits of diff, or of diff - 1 when negative (T.81 F.1.2.1.1);
    # SSSS = 16 (diff 32768) has none
    extra_bits = np.where(category == 16, 0, category).astype(np.int64)
    extra = np.where(diff < 0, diff - 1, diff).astype(np.int64) & ((np.int64(1) << extra_bits) - 1)
    word = (code_of[category] << extra_bits) | extra
    width = length_of[category] + extra_bits  # at most 16 + 16 bits
    packed = _pack_bits(word, width)
    # byte stuffing: every 0xFF in entropy-coded data is followed by 0x00
    ff = np.flatnonzero(packed == 0xFF)
    data = np.insert(packed, ff + 1, 0).tobytes() if ff.size else packed.tobytes()
    sof3 = struct.pack(">BHHB", precision, rows, columns, 1) + bytes([1, 0x11, 0])
    dht = bytes([0x00]) + bytes(counts) + bytes(ordered)
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, predictor 1, Se 0, point transform 0
    return (b"\xff\xd8" + _segment(0xFFC3, sof3) + _segment(0xFFC4, dht) + _segment(0xFFDA, sos)
            + data + b"\xff\xd9")
