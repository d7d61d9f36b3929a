"""How the proxy joins the local stack (``dicomlab stack up``)."""

from __future__ import annotations

from dicomlab_cli.stack import LocalContext


def local_env(ctx: LocalContext) -> dict[str, str]:
    """Orthanc's address and credentials, the shared token key, and the labeling UI as allowed origin."""
    origins = [ctx.url("labeling"), ctx.url("labeling").replace("127.0.0.1", "localhost")]
    return {
        "DICOMLAB_PROXY__ORTHANC__URL": ctx.orthanc_url,
        "DICOMLAB_PROXY__ORTHANC__USERNAME": ctx.orthanc_username,
        "DICOMLAB_PROXY__ORTHANC__PASSWORD": ctx.orthanc_password,
        "DICOMLAB_PROXY__TOKEN_KEYS": ctx.credentials["token_key"],
        "DICOMLAB_PROXY__SERVICE_TOKENS": ctx.credentials["service_token"],
        "DICOMLAB_PROXY__ALLOWED_ORIGINS": ",".join(origins),
        "DICOMLAB_PROXY__PUBLIC_URL": ctx.url("proxy"),
    }
