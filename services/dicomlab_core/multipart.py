"""``multipart/related`` encoding and decoding for DICOMweb (STOW-RS bodies, WADO-RS responses)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from dicomlab_core.errors import UpstreamError


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type header."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"')
    raise UpstreamError(f"multipart response without a boundary: {content_type[:80]!r}")


def encode_related(parts: Iterable[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """Encode ``parts`` as one ``multipart/related`` body; returns ``(body, content_type)``."""
    boundary = f"dicomlab-{secrets.token_hex(16)}"
    chunks: list[bytes] = []
    for payload in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        chunks.append(payload)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


def decode_related(body: bytes, content_type: str) -> list[bytes]:
    """Split a ``multipart/related`` body into the payloads of its parts (headers removed)."""
    delimiter = b"--" + boundary_of(content_type).encode()
    payloads: list[bytes] = []
    for segment in body.split(delimiter)[1:]:
        if segment.startswith(b"--"):
            break
        header_end = segment.find(b"\r\n\r\n")
        if header_end < 0:
            raise UpstreamError("malformed multipart part (no header terminator)")
        payload = segment[header_end + 4:]
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        payloads.append(payload)
    return payloads
