"""The Ground Truth worker template (``dicomlab labeling gt-template``): a ``.liquid.html`` page loading our bundle.

The bundle itself is served by the UI blueprint (``/static/dist``, :mod:`dicomlab_labeling.workflow.routes_ui`)
with ``Access-Control-Allow-Origin: *``, so the worker page (origin ``https://s3.amazonaws.com``) loads it
as CORS module scripts with SRI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from liquid import Environment

from dicomlab_core.labels import DefaultFindingState
from dicomlab_labeling import ui_assets

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
GT_TEMPLATE = TEMPLATES / "gt-worker.liquid.html"


def render_gt_template(
    assets_base: str,
    *,
    instructions: str = "",
    default_finding_state: str = DefaultFindingState.ABSENT.value,
    manifest: ui_assets.AssetManifest | None = None,
    source: Path = GT_TEMPLATE,
) -> str:
    """The Ground Truth ``.liquid.html`` worker template loading our bundle from ``assets_base``.

    ``assets_base`` is the HTTPS URL where this service's ``/static/dist`` is reachable from the
    worker's browser (e.g. ``https://label.example.org/static/dist``). Script and CSS tags carry SRI
    ``integrity`` hashes from the build manifest. The result still contains the Liquid expressions
    that Ground Truth renders per task (``task.input``).

    ``default_finding_state`` is the job's choice for every task (a Ground Truth job has one template):
    ``absent`` (as Ground Truth workers have always had it) or ``not-looked-at`` (each finding must be set,
    or the rest marked absent, before submitting); a task input's own ``defaultFindingState`` wins.
    """
    if not assets_base.startswith(("https://", "http://")):
        raise ValueError("assets_base must be an absolute http(s) URL")
    if default_finding_state not in {s.value for s in DefaultFindingState}:
        raise ValueError(f"default_finding_state must be one of {[s.value for s in DefaultFindingState]}")
    manifest = manifest or ui_assets.manifest()
    assets = manifest.tags_for("gt-worker", assets_base)
    env = Environment(autoescape=True)
    return env.from_string(source.read_text()).render(
        assets=assets, assets_base=assets_base.rstrip("/"), instructions=instructions,
        default_finding_state=default_finding_state,
    )


DIST_PATH = "/static/dist"
"""Where this service serves the bundle, below its root URL."""


def assets_base_for(url: str) -> str:
    """The bundle's public URL from the service's root URL (``https://label.example.org`` →
    ``https://label.example.org/static/dist``); a URL that already ends in ``/static/dist`` is kept."""
    base = url.strip().rstrip("/")
    if not base.startswith(("https://", "http://")) or not urlsplit(base).netloc:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return base if base.endswith(DIST_PATH) else base + DIST_PATH


def register_cli(subparsers: Any) -> None:
    """Add ``gt-template`` to the ``dicomlab labeling`` sub-commands."""
    parser = subparsers.add_parser("gt-template", help="write the Ground Truth worker template (.liquid.html)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--service-url", help="public root URL of this labeling service (https://label.example.org); "
                       "the bundle is loaded from its /static/dist")
    where.add_argument("--assets-base", help="the same, or the URL of its /static/dist (kept for old scripts)")
    parser.add_argument("--out", type=Path, required=True, help="file to write (e.g. worker.liquid.html)")
    parser.add_argument("--instructions", default="", help="short instructions shown under the viewer")
    parser.add_argument("--default-finding-state", choices=[s.value for s in DefaultFindingState],
                        default=DefaultFindingState.ABSENT.value,
                        help="the state findings start in for every task (default: absent)")
    parser.set_defaults(func=_cli_gt_template)


def _cli_gt_template(args: argparse.Namespace) -> int:
    try:
        assets_base = assets_base_for(args.service_url or args.assets_base)
    except ValueError as exc:
        print(f"gt-template: {exc}", file=sys.stderr)
        return 2
    text = render_gt_template(assets_base, instructions=args.instructions,
                              default_finding_state=args.default_finding_state)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text)} bytes, assets from {assets_base}); "
          "upload it as the labeling job's UiTemplateS3Uri")
    return 0
