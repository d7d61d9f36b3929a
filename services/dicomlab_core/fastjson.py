"""JSON for the big Ground Truth payloads: orjson where it can, the standard library where it cannot.

A post-annotation batch is one JSON file of 100,000s of answers (each a JSON string inside JSON) and a
response of the same size; orjson parses and writes them several times faster than :mod:`json`.

The results are the standard library's: :func:`loads` retries with :func:`json.loads` whenever orjson
refuses a document (``NaN``/``Infinity`` literals, numbers that overflow a float, lone surrogates, all
of which Python's parser accepts), so the value read or the error raised is the standard library's.
The one difference: an integer literal outside the 64-bit range is read as the nearest float (Python
keeps an ``int``); answer parsing converts numbers to float anyway, and the annotation-file reader
re-reads a file with :func:`loads_stdlib` when an identifier it turns into a string came out a float.
:func:`dumps` falls back likewise for what orjson cannot write (integers beyond 64 bits, non-string
keys). Without orjson everything goes through :mod:`json`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the fallback keeps a bare runtime working
    orjson = None  # type: ignore[assignment]


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    """Decode one JSON document, the value (or ``ValueError``) being that of :func:`json.loads`."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard library decides: it accepts NaN, huge integers, lone surrogates
    if isinstance(data, memoryview):
        data = bytes(data)
    return json.loads(data)


def loads_stdlib(data: str | bytes | bytearray) -> Any:
    """Decode with :func:`json.loads` only (exact integers of any size)."""
    return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj`` (orjson writes NaN and infinities as ``null``)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError: a huge integer or a non-string key
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
