"""How the manifest service joins ``dicomlab stack up``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dicomlab_core.config import env_name
from dicomlab_manifest.config import PREFIX

if TYPE_CHECKING:
    from dicomlab_cli.stack import LocalContext


def local_env(ctx: LocalContext) -> dict[str, str]:
    """Environment for the manifest service in the local stack (file:// store under the run directory)."""
    values = {
        ("orthanc", "url"): ctx.orthanc_url,
        ("orthanc", "username"): ctx.orthanc_username,
        ("orthanc", "password"): ctx.orthanc_password,
        ("patient_key_secret",): ctx.credentials["patient_key_secret"],
        ("service_token",): ctx.credentials["service_token"],
        ("store_url",): ctx.store_url,
        ("state_dir",): str(ctx.run_dir / "manifest-state"),
    }
    return {env_name(PREFIX, *path): value for path, value in values.items()}
