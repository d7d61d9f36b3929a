"""``dicomlab manifest build | list | show``: the same engine as the HTTP service, run in this process.

Configuration comes from ``DICOMLAB_MANIFEST__*`` variables, or from the running local stack when
they are not set. A build keeps its state under the state directory, keyed by the manifest name
and the spec's fingerprint: rerunning the same command after a crash or an Orthanc outage resumes
from the last checkpoint; ``--fresh`` discards that state first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from dicomlab_core.config import load_config
from dicomlab_core.localenv import local_env
from dicomlab_manifest.config import PREFIX, Config
from dicomlab_manifest.service import ManifestService

LIST_OPTIONS = {
    "modality": "modalities", "body_part": "body_parts", "patient_id": "patient_ids", "patient_key": "patient_keys",
    "study_uid": "study_uids", "series_uid": "series_uids", "exclude_manifest": "exclude_manifests",
}
VALUE_OPTIONS = ("study_date_from", "study_date_to", "study_description", "series_description", "pattern_syntax",
                 "since_manifest", "sop_class_check")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("manifest", help="select images and write manifests")
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build a manifest (resumes an interrupted build of the same spec)")
    build.add_argument("--name", help="manifest name (letters, digits, '.', '_', '-')")
    build.add_argument("--spec", help="a JSON selection spec file; flags override its fields")
    for option, key in LIST_OPTIONS.items():
        build.add_argument("--" + option.replace("_", "-"), dest=option, action="append",
                           help=f"repeatable; sets {key}")
    for option in VALUE_OPTIONS:
        build.add_argument("--" + option.replace("_", "-"), dest=option)
    build.add_argument("--labels", help="comma-separated label set (default: the 14 CheXpert findings)")
    build.add_argument("--max-count", type=int)
    build.add_argument("--seed", type=int)
    build.add_argument("--sample-fraction", type=float)
    build.add_argument("--allow-empty", action="store_true", default=None)
    build.add_argument("--overwrite", action="store_true", default=None)
    build.add_argument("--fresh", action="store_true", help="discard the saved state of an interrupted build")
    build.set_defaults(func=_build)
    actions.add_parser("list", help="list manifests in the object store").set_defaults(func=_list)
    show = actions.add_parser("show", help="print a manifest's summary")
    show.add_argument("name")
    show.set_defaults(func=_show)


def load_cli_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    """The config from ``DICOMLAB_MANIFEST__*``, else from the running local stack (:mod:`dicomlab_core.localenv`)."""
    env = dict(os.environ if environ is None else environ)
    if not any(key.startswith(PREFIX + "__") for key in env):
        env.update(local_env(args, "manifest"))
    return load_config(Config, PREFIX, env)


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if args.spec:
        with open(args.spec) as handle:
            data = json.load(handle)
    if args.name:
        data["name"] = args.name
    for option, key in LIST_OPTIONS.items():
        values = getattr(args, option)
        if values:
            data[key] = [v for value in values for v in value.split(",") if v]
    for option in (*VALUE_OPTIONS, "max_count", "seed", "sample_fraction", "allow_empty", "overwrite"):
        value = getattr(args, option)
        if value is not None:
            data[option] = value
    if args.labels:
        data["labels"] = args.labels
    return data


def _build(args: argparse.Namespace) -> int:
    service = ManifestService(load_cli_config(args))
    try:
        spec = service.parse(spec_from_args(args))
        service.precheck(spec)
        job_dir = service.config.state_dir / "cli" / f"{spec.name}-{spec.fingerprint()[:16]}"
        if args.fresh:
            shutil.rmtree(job_dir, ignore_errors=True)

        def report(progress: dict[str, Any]) -> None:
            counts = progress["counts"]
            print(f"  {progress['phase']}: scanned {counts.get('instances_scanned', 0)}, "
                  f"candidates {counts.get('candidates', 0)}", file=sys.stderr)

        summary = service.builder(spec, job_dir, on_progress=report).run()
        shutil.rmtree(job_dir, ignore_errors=True)
    finally:
        service.close()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _list(args: argparse.Namespace) -> int:
    service = ManifestService(load_cli_config(args))
    for entry in service.manifests.list():
        print(f"{entry['name']:<40} {entry['instances']:>8}  {entry['created']}  {entry['manifest']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    service = ManifestService(load_cli_config(args))
    print(json.dumps(service.manifests.summary(args.name), indent=2, sort_keys=True))
    return 0
