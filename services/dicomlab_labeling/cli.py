"""``dicomlab labeling ...``: the labeling command group.

Ground Truth sub-commands:

- ``consolidate``: consolidate an annotation file (the post-annotation input format) and write
  ``output.manifest`` lines (plus a JSON job report);
- ``lambda-zip``: build the callback Lambda zip;
- ``gt-create-job``: create a Ground Truth labeling job with our template and callbacks.

Other features add their sub-commands in :func:`register` (one ``_register_*`` call each).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from dicomlab_core.errors import BadRequest
from dicomlab_core.groundtruth import ManifestLine, dump_line, iter_manifest, output_manifest_line
from dicomlab_core.labels import CHEXPERT_LABELS, parse_label_list
from dicomlab_core.objectstore import open_store, split_uri

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``labeling`` and its sub-commands to the top-level CLI."""
    parser = subparsers.add_parser("labeling", help="labeling jobs, Ground Truth callbacks and consolidation")
    commands = parser.add_subparsers(dest="labeling_command", required=True, metavar="SUBCOMMAND")
    _register_consolidate(commands)
    _register_lambda_zip(commands)
    _register_gt_create_job(commands)
    from dicomlab_labeling.groundtruth.template import register_cli as _register_gt_template

    _register_gt_template(commands)
    from dicomlab_labeling.workflow.cli import register_selfhosted

    register_selfhosted(commands)


# ------------------------------------------------------------------------------------------ consolidate


def _read(uri: str) -> bytes:
    if uri == "-":
        return sys.stdin.buffer.read()
    store_url, key = split_uri(uri)
    return open_store(store_url).get_bytes(key)


def _write(uri: str, data: bytes) -> None:
    if uri == "-":
        sys.stdout.buffer.write(data)
        return
    store_url, key = split_uri(uri)
    open_store(store_url).put_bytes(key, data, "application/x-ndjson" if uri.endswith("manifest") else
                                    "application/json")


def _register_consolidate(commands: Any) -> None:
    p = commands.add_parser("consolidate", help="consolidate an annotation file into output.manifest lines",
                            description="Read a Ground Truth annotation file (a JSON array of data objects with "
                                        "worker answers), consolidate it and write output manifest lines.")
    p.add_argument("--annotations", required=True, help="annotation file URI (s3://, file:// or a path)")
    p.add_argument("--attr", required=True, help="label attribute name")
    p.add_argument("--out", required=True, help="output manifest URI (s3://..., file://... or path; - = stdout)")
    p.add_argument("--input-manifest", help="input manifest to copy keys from (matched on source/source-ref)")
    p.add_argument("--job-name", help="job name in the metadata (default: --attr)")
    p.add_argument("--labels", help="label list, comma-separated (default: the input manifest's, or CheXpert)")
    p.add_argument("--report", help="where to write the JSON job report (agreement, readers, rejections)")
    p.add_argument("--role-arn", help="assume this role to read s3:// answers (default: own credentials)")
    p.set_defaults(func=_consolidate)


def _consolidate(args: argparse.Namespace) -> int:
    from dicomlab_labeling.consensus.consolidation import consolidate
    from dicomlab_labeling.groundtruth.callbacks import gc_paused, load_annotations

    inputs: dict[str, ManifestLine] = {}
    if args.input_manifest:
        for line in iter_manifest(_read(args.input_manifest).splitlines()):
            inputs[line.ref] = line
    labels: tuple[str, ...] = CHEXPERT_LABELS
    if args.labels:
        labels = parse_label_list(args.labels, field="--labels")
    else:
        labels = next((line.labels for line in inputs.values() if line.labels), CHEXPERT_LABELS)
    entries = json.loads(_read(args.annotations))
    ctx = _store_reader(args.role_arn)
    with gc_paused():
        objects = load_annotations(entries, labels, ctx, args.role_arn)
        result = consolidate(objects, labels, ctx.config.consolidation)
    refs = _object_refs(entries)
    lines = []
    for obj, content in zip(objects, result.contents(), strict=True):
        ref_key, ref = refs.get(obj.object_id, ("source", obj.object_id))
        base: ManifestLine | dict[str, Any] = inputs.get(ref) or {ref_key: ref}
        lines.append(dump_line(output_manifest_line(base, args.attr, content, job_name=args.job_name or args.attr)))
    _write(args.out, ("\n".join(lines) + "\n").encode())
    if args.report:
        _write(args.report, json.dumps(result.report.to_json(), indent=2).encode())
    print(json.dumps({"objects": len(objects), "rejected": len(result.report.rejected),
                      "flagged": result.report.flagged}), file=sys.stderr)
    return 0


def _object_refs(entries: Any) -> dict[str, tuple[str, str]]:
    """datasetObjectId → (manifest key, value) from each entry's ``dataObject`` (content or s3Uri)."""
    refs: dict[str, tuple[str, str]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or "datasetObjectId" not in entry:
            continue
        data = entry.get("dataObject") or {}
        if isinstance(data.get("s3Uri"), str):
            refs[str(entry["datasetObjectId"])] = ("source-ref", data["s3Uri"])
        elif isinstance(data.get("content"), str):
            refs[str(entry["datasetObjectId"])] = ("source", data["content"])
    return refs


def _store_reader(role_arn: str | None) -> Any:
    """A callback context that can read answers stored at ``annotationData.s3Uri`` (no token keys needed)."""
    from dicomlab_core.config import env_name, load_config
    from dicomlab_core.tokens import KeyRing, signer_from_entries
    from dicomlab_labeling.config import ENV_PREFIX, LabelingConfig
    from dicomlab_labeling.groundtruth.callbacks import CallbackContext

    environ = dict(os.environ)
    environ.setdefault(env_name(ENV_PREFIX, "token_keys"), KeyRing.generate_entry("unused"))
    config = load_config(LabelingConfig, ENV_PREFIX, environ)
    return CallbackContext(config=config, orthanc=_NoOrthanc(), signer=signer_from_entries(config.token_keys))


class _NoOrthanc:
    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        raise BadRequest("Orthanc is not used by this command")

    def lookup_instance(self, sop_instance_uid: str) -> str | None:
        raise BadRequest("Orthanc is not used by this command")


# ------------------------------------------------------------------------------------------ lambda-zip


def _register_lambda_zip(commands: Any) -> None:
    p = commands.add_parser("lambda-zip", help="build the Ground Truth callback Lambda zip",
                            description="Bundle dicomlab_core, the callback modules, numpy, requests and pydicom "
                                        "(not boto3, which the runtime provides) into one zip.")
    p.add_argument("--out", required=True, type=Path, help="zip file to write")
    p.add_argument("--wheel", action="append", type=Path, default=[],
                   help="bundle this wheel instead of the installed distribution (e.g. a manylinux2014 numpy)")
    p.set_defaults(func=_lambda_zip)


def _lambda_zip(args: argparse.Namespace) -> int:
    from dicomlab_labeling.groundtruth.lambda_package import build_zip

    info = build_zip(args.out, wheels=args.wheel)
    summary = {"zip": str(args.out), "bytes": info["bytes"], "handlers": info["handlers"],
               "distributions": {d["name"]: d["version"] for d in info["distributions"]},
               "warnings": info["warnings"]}
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------ gt-create-job


def _register_gt_create_job(commands: Any) -> None:
    p = commands.add_parser("gt-create-job", help="create a SageMaker Ground Truth labeling job",
                            description="CreateLabelingJob with our worker template and both callback Lambdas.")
    p.add_argument("--name", required=True, help="labeling job name")
    p.add_argument("--manifest", required=True, help="input manifest s3:// URI")
    p.add_argument("--output", required=True, help="output s3:// path")
    p.add_argument("--role-arn", required=True, help="execution role ARN for Ground Truth")
    p.add_argument("--workteam-arn", required=True, help="private workteam ARN")
    p.add_argument("--template", required=True, help="worker template (.liquid.html) s3:// URI")
    p.add_argument("--pre-lambda-arn", required=True, help="pre-annotation Lambda ARN")
    p.add_argument("--post-lambda-arn", required=True, help="post-annotation (consolidation) Lambda ARN")
    p.add_argument("--attr", default="", help="label attribute name (default: the job name)")
    p.add_argument("--workers", type=int, default=3, help="readers per image (1-9, default 3)")
    p.add_argument("--task-time-limit", type=int, default=3600, help="seconds per task (default 3600)")
    p.add_argument("--task-availability", type=int, default=21600, help="seconds a task stays open (default 21600)")
    p.add_argument("--max-concurrent-tasks", type=int, help="cap on tasks out at once")
    p.add_argument("--token-ttl", type=int, default=43200,
                   help="the labeling service's DICOMLAB_LABELING__TOKEN_TTL_SECONDS (default 43200)")
    p.add_argument("--title", help="task title shown to readers")
    p.add_argument("--description", help="task description shown to readers")
    p.add_argument("--label-category-config", help="label category config s3:// URI (optional)")
    p.add_argument("--kms-key-id", help="KMS key for the output")
    p.add_argument("--tag", action="append", default=[], help="KEY=VALUE tag (repeatable)")
    p.add_argument("--region", help="AWS region (default: the SDK's)")
    p.add_argument("--dry-run", action="store_true", help="print the request instead of sending it")
    p.set_defaults(func=_gt_create_job)


def _gt_create_job(args: argparse.Namespace) -> int:
    from dicomlab_labeling.groundtruth.job import GroundTruthJobSpec, build_request, create_job, parse_tags

    optional = {k: v for k, v in (("title", args.title), ("description", args.description)) if v}
    spec = GroundTruthJobSpec(
        name=args.name, input_manifest_uri=args.manifest, output_path=args.output, role_arn=args.role_arn,
        workteam_arn=args.workteam_arn, template_uri=args.template, pre_lambda_arn=args.pre_lambda_arn,
        post_lambda_arn=args.post_lambda_arn, label_attribute=args.attr, workers_per_object=args.workers,
        task_time_limit_seconds=args.task_time_limit, task_availability_seconds=args.task_availability,
        max_concurrent_tasks=args.max_concurrent_tasks, label_category_config_uri=args.label_category_config,
        kms_key_id=args.kms_key_id, tags=parse_tags(args.tag), token_ttl_seconds=args.token_ttl, **optional)
    if args.dry_run:
        print(json.dumps(build_request(spec), indent=2))
        return 0
    print(create_job(spec, region=args.region))
    return 0
