"""Who may talk to Orthanc's DICOM port: only configured modalities (AE title + address), C-ECHO and C-STORE.

Orthanc's defaults accept C-ECHO and C-STORE from any AE title at any address, so anything that
reaches the port can put images into manifests, labeling and training. The policy here (Orthanc
settings, supported by Orthanc 1.10 and by the upstream image):

- the called AE title must be Orthanc's own (``DicomCheckCalledAet``);
- only modalities listed in ``DicomModalities`` may associate, and only from their listed address
  (``DicomAlwaysAllow*`` false, ``DicomCheckModalityHost`` true: Orthanc compares the peer's IP address
  with the modality's ``Host`` as written, so give an address, not a host name);
- a listed modality may C-ECHO and C-STORE, nothing else (no C-FIND, C-GET, C-MOVE, worklists or
  storage commitment: modalities send images, they do not browse the PACS);
- with no modality configured the DICOM server is off: nothing listens on the port at all (Orthanc
  1.10 has no option to bind its DICOM port to one address, so switching the server off is the only
  way to close it locally).

The local stack takes the modalities from ``DICOMLAB_DICOM_MODALITIES``
(``name=AET@address:port``, comma-separated); the Helm chart renders the same settings from
``orthanc.dicomModalities`` (``tests/deploy/test_orthanc_config.py`` checks that both agree).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

MODALITIES_ENV = "DICOMLAB_DICOM_MODALITIES"

_AET = re.compile(r"^[A-Za-z0-9_.\-]{1,16}$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class ModalityError(ValueError):
    """A modality entry that cannot be used (the message names the entry and what is wrong)."""


@dataclass(frozen=True)
class DicomModality:
    """A modality allowed to send images: its AE title, the IP address it connects from, its DICOM port."""

    name: str
    aet: str
    host: str
    port: int = 104

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ModalityError(f"modality name {self.name!r}: use 1-64 letters, digits, '-' or '_'")
        if not _AET.match(self.aet):
            raise ModalityError(f"modality {self.name!r}: AE title {self.aet!r} must be 1-16 letters, digits, "
                                "'_', '-' or '.'")
        try:
            ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise ModalityError(f"modality {self.name!r}: host {self.host!r} must be an IP address (Orthanc "
                                "compares it with the peer's address)") from exc
        if not 0 < self.port < 65536:
            raise ModalityError(f"modality {self.name!r}: port {self.port} is not a TCP port")

    def orthanc_entry(self) -> dict[str, object]:
        """The modality's ``DicomModalities`` entry: C-ECHO and C-STORE only."""
        return {"AET": self.aet, "Host": self.host, "Port": self.port, "AllowEcho": True, "AllowStore": True,
                "AllowFind": False, "AllowFindWorklist": False, "AllowGet": False, "AllowMove": False,
                "AllowStorageCommitment": False}


def orthanc_settings(modalities: tuple[DicomModality, ...]) -> dict[str, object]:
    """Orthanc's DICOM-port settings for exactly these modalities (none: the DICOM server is off)."""
    names = [m.name for m in modalities]
    if len(set(names)) != len(names):
        raise ModalityError(f"modality names must be unique: {names}")
    return {
        "DicomServerEnabled": bool(modalities),
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomModalitiesInDatabase": False,
        "DicomModalities": {m.name: m.orthanc_entry() for m in modalities},
    }


def parse_modalities(text: str) -> tuple[DicomModality, ...]:
    """``name=AET@address:port`` entries, comma-separated (``:port`` optional, default 104)."""
    result = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        match = re.fullmatch(r"([^=]+)=([^@]+)@(\[[^\]]+\]|[^:]+)(?::(\d+))?", entry)
        if match is None:
            raise ModalityError(f"{MODALITIES_ENV}: {entry!r} is not name=AET@address[:port]")
        name, aet, host, port = match.groups()
        result.append(DicomModality(name.strip(), aet.strip(), host.strip("[]"), int(port) if port else 104))
    modalities = tuple(result)
    orthanc_settings(modalities)  # checks that the names are unique
    return modalities


def modalities_from_env() -> tuple[DicomModality, ...]:
    """The local stack's modalities (``DICOMLAB_DICOM_MODALITIES``; empty: the DICOM port stays closed)."""
    return parse_modalities(os.environ.get(MODALITIES_ENV, ""))
