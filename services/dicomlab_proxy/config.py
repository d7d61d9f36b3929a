"""The proxy's configuration: one frozen dataclass loaded from ``DICOMLAB_PROXY__*`` variables.

Example::

    DICOMLAB_PROXY__ORTHANC__URL=http://orthanc:8042
    DICOMLAB_PROXY__ORTHANC__PASSWORD=...
    DICOMLAB_PROXY__TOKEN_KEYS=k2:...,k1:...
    DICOMLAB_PROXY__ALLOWED_ORIGINS=https://label.example.org,https://s3.amazonaws.com
    DICOMLAB_PROXY__PUBLIC_URL=https://pacs.example.org/proxy
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dicomlab_core.config import Secret, load_config
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_core.tokens import KeyRing

PREFIX = "DICOMLAB_PROXY"

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
PUBLIC_URL = re.compile(r"^(https?)://([A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?)"
                        r"((?:/[A-Za-z0-9._~-]+)*)/?$")
"""``scheme://host[:port][/prefix]``: the only shape accepted for the public URL."""


@dataclass(frozen=True)
class Config:
    """Settings of the DICOMweb CORS proxy."""

    token_keys: tuple[Secret, ...]
    """Token verification keys, ``kid:base64url-secret`` comma-separated (shared with labeling). Required."""
    orthanc: OrthancSettings = field(default_factory=OrthancSettings)
    """How to reach Orthanc (``DICOMLAB_PROXY__ORTHANC__URL``, ``__USERNAME``, ``__PASSWORD``, timeouts)."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed by CORS, exact ``scheme://host[:port]`` matches; default none."""
    public_url: str = ""
    """Public base URL of the proxy (``https://host[/prefix]``) used in DICOMweb URLs; default: request Host."""
    service_tokens: tuple[Secret, ...] = ()
    """Bearer secrets of service callers (training, STOW); full read access; default none."""
    stow_enabled: bool = False
    """Accept STOW-RS (POST .../studies) from service callers; default false (read-only)."""
    max_stow_bytes: int = 512 * 1024 * 1024
    """Largest STOW-RS request body, in bytes; default 512 MiB."""
    max_header_bytes: int = 16 * 1024
    """Largest total size of request headers, in bytes; default 16384."""
    max_query_chars: int = 4096
    """Longest request query string, in characters; default 4096."""
    cors_max_age: int = 600
    """Seconds browsers may cache a preflight answer; default 600."""
    rate_limit_per_second: float = 50.0
    """Sustained requests per second per token (in-process token bucket, per worker); 0 disables; default 50."""
    rate_limit_burst: int = 200
    """Requests a token may make in a burst above the sustained rate; default 200."""
    deid_max_json_bytes: int = 32 * 1024 * 1024
    """Largest metadata/search answer read whole to be de-identified for a ``deid`` token, in bytes; default 32 MiB."""
    chunk_bytes: int = 1024 * 1024
    """Size of each upstream read while streaming, in bytes; default 1 MiB."""
    zero_copy: bool = True
    """Move large bodies of known length socket to socket with splice(2) (Linux, gunicorn, no TLS); default true."""
    send_timeout: float = 60.0
    """Seconds a response may wait for a client that takes no more bytes before the proxy drops it (like
    nginx's ``send_timeout``): a stalled reader cannot hold a worker thread and a PACS connection; default 60."""
    ready_timeout: float = 2.0
    """Seconds ``/readyz`` waits for Orthanc; default 2."""
    wado_root: str = "/wado"
    """Path of Orthanc's WADO-URI endpoint (the plugin's ``WadoRoot``); default /wado."""
    log_level: str = "INFO"
    """Log level of the JSON logs; default INFO."""

    def validate(self) -> None:
        try:
            KeyRing.parse(self.token_keys)
        except ValueError as exc:
            raise ValueError(f"{PREFIX}__TOKEN_KEYS: {exc}") from None
        for origin in self.allowed_origins:
            if not _ORIGIN.match(origin):
                raise ValueError(f"allowed origin {origin!r} must be an exact scheme://host[:port] (no '*', no path)")
        if self.public_url and not PUBLIC_URL.match(self.public_url):
            raise ValueError(f"public_url {self.public_url!r} must look like https://host[:port][/prefix]")
        if any(len(t.reveal()) < 16 for t in self.service_tokens):
            raise ValueError("service tokens must be at least 16 characters")
        if self.chunk_bytes < 64 * 1024:
            raise ValueError("chunk_bytes must be at least 65536")
        if self.deid_max_json_bytes < 64 * 1024:
            raise ValueError("deid_max_json_bytes must be at least 65536")
        if self.send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        if not self.wado_root.startswith("/"):
            raise ValueError("wado_root must start with '/'")

    @property
    def dicomweb_root(self) -> str:
        """Public path of DICOMweb: the same as Orthanc's, so the URLs Orthanc writes resolve here."""
        return "/" + self.orthanc.dicomweb_root.strip("/")


def load() -> Config:
    """The configuration from the environment."""
    return load_config(Config, PREFIX)
