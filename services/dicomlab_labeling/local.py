"""How the labeling service joins ``dicomlab stack up``: its environment on the local stack.

The database is the SQLite default under ``<run dir>/labeling``, or the stack's PostgreSQL database
``labeling`` when the stack runs with ``--postgres``.
"""

from __future__ import annotations

from dicomlab_cli.stack import LocalContext


def local_env(ctx: LocalContext) -> dict[str, str]:
    """``DICOMLAB_LABELING__*`` for the local stack: loopback Orthanc and proxy, the shared token key."""
    creds = ctx.credentials
    prefix = "DICOMLAB_LABELING__"
    env = {
        "TOKEN_KEYS": creds["token_key"],
        "ORTHANC__URL": ctx.orthanc_url,
        "ORTHANC__USERNAME": ctx.orthanc_username,
        "ORTHANC__PASSWORD": ctx.orthanc_password,
        "PROXY_PUBLIC_URL": ctx.url("proxy"),
        "PUBLIC_URL": ctx.url("labeling"),
        "STORE_URL": ctx.store_url,
        "DATA_DIR": str(ctx.run_dir / "labeling"),
        "SESSION_SECRET": creds["session_secret"],
        "GT__SERVICE_TOKEN": creds["service_token"],
        "AUTH__ADMIN_USERNAME": creds["admin_username"],
        "AUTH__ADMIN_PASSWORD": creds["admin_password"],
        "AUTH__COOKIE_SECURE": "false",  # the local stack is plain http on loopback
    }
    if "postgres" in ctx.ports:
        env["DATABASE_URL"] = (f"postgresql+psycopg://dicomlab:{creds['postgres_password']}"
                               f"@127.0.0.1:{ctx.ports['postgres']}/labeling")
    return {prefix + key: value for key, value in env.items()}
