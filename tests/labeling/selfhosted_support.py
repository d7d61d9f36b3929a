"""The self-hosted labeling tests' helpers, now in :mod:`support.labeling` (re-exported here so the test
modules keep their imports); ``serve`` is :func:`support.servers.serve`."""

from support.labeling import (
    ADMIN,
    PASSWORD,
    Api,
    create_users,
    database_url,
    first_assignment,
    labeling_app,
    make_config,
    write_manifest,
)
from support.servers import serve

__all__ = ["ADMIN", "PASSWORD", "Api", "create_users", "database_url", "first_assignment", "labeling_app",
           "make_config", "serve", "write_manifest"]
