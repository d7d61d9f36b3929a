"""The UI browser tests' helpers, now in :mod:`support.browser` and :mod:`support.servers` (re-exported here
so the browser test modules keep their imports)."""

from support.browser import CROWD_ELEMENTS_STUB, ROOT, PageLog, browser, ensure_bundle, pixel_stats
from support.servers import serve

__all__ = ["CROWD_ELEMENTS_STUB", "ROOT", "PageLog", "browser", "ensure_bundle", "pixel_stats", "serve"]
