"""The local stack's wiring: one function turns a running stack into each package's environment.

The CLI is the top layer: it alone knows the local stack (``dicomlab stack up``). Each package reads
its settings from its own ``DICOMLAB_<PACKAGE>__*`` variables, exactly as in a container; the stack
starts a service with :func:`stack_env` as its environment, and a sub-command that falls back on the
running stack (``dicomlab synth --upload``, ``dicomlab manifest``, ``dicomlab train run --local-stack``)
receives the same variables through :data:`dicomlab_core.localenv.LocalEnv`. Orthanc's address and
credentials are written here once, in one style (:func:`dicomlab_core.config.env_name`), for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicomlab_cli.processes import LOOPBACK
from dicomlab_core.config import env_name
from dicomlab_core.synth.cli import PREFIX as SYNTH_PREFIX
from dicomlab_labeling.config import ENV_PREFIX as LABELING_PREFIX
from dicomlab_manifest.config import PREFIX as MANIFEST_PREFIX
from dicomlab_proxy.config import PREFIX as PROXY_PREFIX
from dicomlab_training.config import ENV_PREFIX as TRAIN_PREFIX


@dataclass(frozen=True)
class LocalContext:
    """What a running local stack offers: its run directory, Orthanc, ports, generated secrets, store."""

    run_dir: Path
    orthanc_url: str
    orthanc_username: str
    orthanc_password: str
    ports: dict[str, int]
    credentials: dict[str, str]
    store_url: str

    def url(self, service: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[service]}"


Values = dict[tuple[str, ...], str]


def _proxy(ctx: LocalContext) -> Values:
    """The shared token key, the service token, and the labeling UI (both spellings of loopback) as origin."""
    origins = [ctx.url("labeling"), ctx.url("labeling").replace(LOOPBACK, "localhost")]
    return {
        ("token_keys",): ctx.credentials["token_key"],
        ("service_tokens",): ctx.credentials["service_token"],
        ("allowed_origins",): ",".join(origins),
        ("public_url",): ctx.url("proxy"),
    }


def _manifest(ctx: LocalContext) -> Values:
    """The patient-key secret, the service token, the ``file://`` store and a state folder in the run directory."""
    return {
        ("patient_key_secret",): ctx.credentials["patient_key_secret"],
        ("service_token",): ctx.credentials["service_token"],
        ("store_url",): ctx.store_url,
        ("state_dir",): str(ctx.run_dir / "manifest-state"),
    }


def _labeling(ctx: LocalContext) -> Values:
    """Loopback proxy and UI, the shared token key, the demo admin; SQLite under the run directory, or the
    stack's PostgreSQL database ``labeling`` when the stack runs with ``--postgres``."""
    creds = ctx.credentials
    values: Values = {
        ("token_keys",): creds["token_key"],
        ("proxy_public_url",): ctx.url("proxy"),
        ("public_url",): ctx.url("labeling"),
        ("store_url",): ctx.store_url,
        ("data_dir",): str(ctx.run_dir / "labeling"),
        ("session_secret",): creds["session_secret"],
        ("gt", "service_token"): creds["service_token"],
        ("auth", "admin_username"): creds["admin_username"],
        ("auth", "admin_password"): creds["admin_password"],
        ("auth", "cookie_secure"): "false",  # the local stack is plain http on loopback
    }
    if "postgres" in ctx.ports:
        values[("database_url",)] = (f"postgresql+psycopg://dicomlab:{creds['postgres_password']}"
                                     f"@{LOOPBACK}:{ctx.ports['postgres']}/labeling")
    return values


def _train(ctx: LocalContext) -> Values:
    """Only Orthanc: ``dicomlab train run --local-stack``."""
    return {}


def _synth(ctx: LocalContext) -> Values:
    """Orthanc, and ``<run dir>/synth`` for the ground truth of an upload."""
    return {("truth_dir",): str(ctx.run_dir / "synth")}


PACKAGES: dict[str, tuple[str, Callable[[LocalContext], Values]]] = {
    "proxy": (PROXY_PREFIX, _proxy),
    "manifest": (MANIFEST_PREFIX, _manifest),
    "labeling": (LABELING_PREFIX, _labeling),
    "train": (TRAIN_PREFIX, _train),
    "synth": (SYNTH_PREFIX, _synth),
}
"""Each package that can run on the local stack: its variable prefix and what it needs beyond Orthanc."""


def stack_env(ctx: LocalContext, package: str) -> dict[str, str]:
    """``DICOMLAB_<PACKAGE>__*`` for ``package`` (a key of :data:`PACKAGES`) on the stack ``ctx``.

    Every package gets Orthanc's URL and credentials under ``…__ORTHANC__*``; the rest is its own.
    """
    if package not in PACKAGES:
        raise KeyError(f"no local-stack wiring for {package!r} (known: {', '.join(PACKAGES)})")
    prefix, own = PACKAGES[package]
    values: Values = {
        ("orthanc", "url"): ctx.orthanc_url,
        ("orthanc", "username"): ctx.orthanc_username,
        ("orthanc", "password"): ctx.orthanc_password,
        **own(ctx),
    }
    return {env_name(prefix, *path): value for path, value in values.items()}
