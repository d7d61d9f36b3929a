"""Ground Truth callbacks: pre-annotation (task input per data object) and post-annotation (consolidation).

The same two functions serve the HTTP endpoints (:mod:`.routes`) and the Lambda handlers
(:mod:`lambda_handlers`); they take the event as Ground Truth sends it and return exactly what it
expects. See ``ground-truth.md`` for the shapes.

Pre-annotation, ``source`` (an Orthanc instance ID): the instance is looked up in Orthanc (its UIDs
scope the token), and the task gets the proxy URL of the file, the proxy's DICOMweb root, the UIDs,
a token for that one instance valid ``token_ttl_seconds``, the label list (always a JSON array) and,
for review/adjustment jobs, the previous job's label attribute as ``previousAnswer`` (a clean answer:
consensus ``findings`` states and ``rois``, plus the stored ``content`` and its ``labelAttributeName``).

Pre-annotation, ``source-ref`` (an object URI of a ``.dcm``): browsers only read images through the
proxy, so the object must also be in the PACS. Its SOP Instance UID comes from the line's
``sop-instance-uid`` key when present, else from the object's DICOM header (read through the object
store); it is then looked up in Orthanc and handled like ``source``. An image missing from the PACS is
"unknown": an error, or skipped (``isHumanAnnotationRequired: false``) with ``skip_unknown_instances``.

Post-annotation: the annotation file at ``payload.s3Uri`` (and any answer stored at
``annotationData.s3Uri``) is read with credentials from assuming ``roleArn`` (when ``assume_role`` is
on and the request has one) or with the service's own; every data object in the file gets an entry.
Every URI in a request (``payload.s3Uri``, ``annotationData.s3Uri``, ``source-ref``) must lie in
``store_url`` or ``extra_read_stores``; anything else is refused with one message, whatever is there.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol

from dicomlab_core import fastjson
from dicomlab_core.errors import BadRequest, NotFound, ServiceError, UpstreamError
from dicomlab_core.groundtruth import (
    METADATA_SUFFIX,
    ManifestLine,
    answer_from_content,
    label_attributes,
    parse_post_request,
    response_entry,
)
from dicomlab_core.groundtruth import pre_annotation as pre_annotation_contract
from dicomlab_core.objectstore import ObjectStore, S3Store, open_store
from dicomlab_core.tokens import Scope, TokenSigner
from dicomlab_labeling.config import LabelingConfig
from dicomlab_labeling.consensus.consolidation import (
    ConsolidationResult,
    ObjectAnswers,
    Rejection,
    collect,
    consolidate,
)

logger = logging.getLogger(__name__)

_ARN_JOB = re.compile(r":labeling-job/([A-Za-z0-9-]{1,63})$")


class InstanceLookup(Protocol):
    """What pre-annotation needs from Orthanc (``OrthancClient`` has both)."""

    def instance_tags(self, instance_id: str) -> dict[str, Any]: ...
    def lookup_instance(self, sop_instance_uid: str) -> str | None: ...


@dataclass
class CallbackContext:
    """Everything the callbacks use, built once per process (app, Lambda container, CLI run)."""

    config: LabelingConfig
    orthanc: InstanceLookup
    signer: TokenSigner
    _clients: dict[str | None, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ object store access

    def s3_client(self, role_arn: str | None) -> Any:
        """An S3 client: with assumed-role credentials for ``role_arn``, else the default chain."""
        use_role = role_arn if (role_arn and self.config.gt.assume_role) else None
        if use_role in self._clients:
            return self._clients[use_role]
        import boto3

        gt = self.config.gt
        region = gt.region or None
        s3_endpoint = gt.s3_endpoint_url or None
        if use_role is None:
            import os

            client = boto3.client("s3", region_name=region,
                                  endpoint_url=s3_endpoint or os.environ.get("DICOMLAB_S3_ENDPOINT_URL") or None)
        else:
            client = assumed_role_client("s3", use_role, region=region, sts_endpoint=gt.sts_endpoint_url or None,
                                         endpoint=s3_endpoint, duration=gt.role_session_seconds)
        self._clients[use_role] = client
        return client

    def read(self, uri: str, role_arn: str | None = None, *, field: str = "payload.s3Uri") -> bytes:
        """The bytes of ``uri`` (``s3://`` with the role's credentials, or ``file://``).

        Only URIs inside ``store_url`` or ``extra_read_stores`` are read; anything else is refused with one
        message naming ``field``, whatever is (or is not) there.
        """
        store_url, key = self.config.read_scope().locate(uri, field=field)
        store: ObjectStore
        if store_url.startswith("s3://"):
            store = S3Store(store_url[len("s3://"):], client=self.s3_client(role_arn))
        else:
            store = open_store(store_url)
        return store.get_bytes(key)


def assumed_role_client(service: str, role_arn: str, *, region: str | None, sts_endpoint: str | None,
                        endpoint: str | None, duration: int = 900) -> Any:
    """A boto3 client for ``service`` with temporary credentials from ``sts:AssumeRole``."""
    import os

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    sts = boto3.client("sts", region_name=region, endpoint_url=sts_endpoint)
    try:
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="dicomlab-consolidation",
                                DurationSeconds=duration)["Credentials"]
    except (BotoCoreError, ClientError) as exc:
        raise UpstreamError(f"cannot assume role {role_arn}: {type(exc).__name__}") from exc
    if service == "s3" and endpoint is None:
        endpoint = os.environ.get("DICOMLAB_S3_ENDPOINT_URL") or None
    make_client: Any = boto3.client  # the service name is dynamic, so the typed overloads do not apply
    return make_client(service, region_name=region, endpoint_url=endpoint,
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"])


# ---------------------------------------------------------------------------------------- pre-annotation


def job_name(labeling_job_arn: Any) -> str:
    """The job name at the end of a labeling job ARN ("" when it is not one)."""
    if not isinstance(labeling_job_arn, str):
        return ""
    match = _ARN_JOB.search(labeling_job_arn)
    return match.group(1) if match else ""


def _orthanc_id_for_ref(line: ManifestLine, ctx: CallbackContext) -> str | None:
    sop = line.sop_uid
    if sop is None:
        import pydicom
        from pydicom.errors import InvalidDicomError

        data = ctx.read(line.source_ref or "", field="dataObject.source-ref")
        try:
            sop = str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        except (InvalidDicomError, AttributeError, ValueError) as exc:
            raise BadRequest(f"{line.source_ref} is not a DICOM file with a SOP Instance UID") from exc
    return ctx.orthanc.lookup_instance(sop)


def _previous_answer(line: ManifestLine, labels: Sequence[str]) -> dict[str, Any] | None:
    """The newest earlier label attribute of the line as a clean answer the viewer can start from.

    ``findings``/``rois`` are in the worker-answer shape; ``labelAttributeName``, ``jobName`` and
    ``content`` (the attribute as stored) say where it came from.
    """
    attrs = label_attributes(line.data)
    if not attrs:
        return None
    attr = attrs[-1]
    content = line.data[attr]
    metadata = line.data.get(attr + METADATA_SUFFIX) or {}
    answer = answer_from_content(content, labels) or {"findings": {}, "rois": []}
    return {**answer, "labelAttributeName": attr, "jobName": metadata.get("job-name", metadata.get("job_name")),
            "content": content}


def pre_annotation(event: Any, ctx: CallbackContext) -> dict[str, Any]:
    """Ground Truth pre-annotation: one data object → ``{"taskInput": {...}, "isHumanAnnotationRequired": bool}``."""
    request = pre_annotation_contract.parse_request(event)
    line = request.line
    config = ctx.config
    labels = list(line.labels or config.labels)
    orthanc_id = line.source if line.source else _orthanc_id_for_ref(line, ctx)
    tags: dict[str, Any] | None = None
    if orthanc_id:
        try:
            tags = ctx.orthanc.instance_tags(orthanc_id)
        except NotFound:
            tags = None
    if tags is None or not all(tags.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
        if config.gt.skip_unknown_instances:
            logger.warning("skipping a data object whose image is not in the PACS", extra={"ref": line.ref[:200]})
            return pre_annotation_contract.response({"skipped": True, "reason": "image not found in the PACS"},
                                                    human_required=False)
        raise NotFound(f"image {line.ref[:200]!r} is not in the PACS")
    assert orthanc_id is not None
    study, series, sop = (str(tags["StudyInstanceUID"]), str(tags["SeriesInstanceUID"]),
                          str(tags["SOPInstanceUID"]))
    proxy = config.proxy_public_url.rstrip("/")
    job = job_name(request.job_arn)
    token = ctx.signer.issue(Scope(instances=(sop,), orthanc_ids=(orthanc_id,)),
                             subject=f"gt:{job}" if job else "gt", ttl_seconds=config.token_ttl_seconds)
    task: dict[str, Any] = {
        "taskObject": f"{proxy}/instances/{orthanc_id}/file",
        "wadoRsRoot": f"{proxy}{config.proxy_dicomweb_path}",
        "orthancId": orthanc_id,
        "studyInstanceUid": study,
        "seriesInstanceUid": series,
        "sopInstanceUid": sop,
        "token": token,
        "tokenExpiresIn": config.token_ttl_seconds,
        "labels": labels,
    }
    previous = _previous_answer(line, labels)
    if previous is not None:
        task["previousAnswer"] = previous
    return pre_annotation_contract.response(task)


# ---------------------------------------------------------------------------------------- post-annotation


def load_annotations(data: bytes | list[Any], labels: Sequence[str], ctx: CallbackContext | None = None,
                     role_arn: str | None = None) -> list[ObjectAnswers]:
    """Parse an annotation file (JSON array, raw or decoded) into per-object answers.

    Answers that cannot be used (malformed, unreadable at their ``s3Uri``, a worker's second answer)
    become rejections of their object; an entry without ``datasetObjectId`` cannot be answered for and
    is skipped with a warning.
    """
    entries = data if isinstance(data, list) else _decode_file(data)
    if not isinstance(entries, list):
        raise BadRequest("annotation file must be a JSON array")
    # orjson reads an integer beyond 64 bits as a float; an id that came out a float is taken from the
    # file re-read by the standard library (rare, so no pass over the whole file looks for one first)
    exact: list[Any] = []
    objects: list[ObjectAnswers] = []
    allowed = frozenset(labels)
    for index, entry in enumerate(entries):
        if (type(entry) is not dict and not isinstance(entry, Mapping)) or "datasetObjectId" not in entry:
            logger.warning("annotation entry without datasetObjectId skipped", extra={"index": index})
            continue
        object_id_in = entry["datasetObjectId"]
        if type(object_id_in) is float and isinstance(data, bytes | str):
            exact = exact or fastjson.loads_stdlib(data)
            object_id_in = exact[index]["datasetObjectId"]
        object_id = str(object_id_in)
        raw: list[tuple[str, Any]] = []
        problems: list[Rejection] = []
        annotations = entry.get("annotations")
        for number, item in enumerate(annotations if isinstance(annotations, list) else []):
            if type(item) is dict:  # the usual annotation first, kept cheap: 100,000s per file
                worker_in = item.get("workerId", "")
                data_in = item.get("annotationData")
                if type(worker_in) is str and type(data_in) is dict and "content" in data_in:
                    raw.append((worker_in, data_in["content"]))
                    continue
            is_map = type(item) is dict or isinstance(item, Mapping)
            worker_in = item.get("workerId", "") if is_map else ""
            if type(worker_in) is float and isinstance(data, bytes | str):
                exact = exact or fastjson.loads_stdlib(data)
                worker_in = exact[index]["annotations"][number]["workerId"]
            worker = str(worker_in)
            data_in = item.get("annotationData") if is_map else None
            if type(data_in) is not dict and not isinstance(data_in, Mapping):
                problems.append(Rejection(object_id, worker, "annotation without annotationData", item))
            elif "content" in data_in:
                raw.append((worker, data_in["content"]))
            elif isinstance(data_in.get("s3Uri"), str) and ctx is not None:
                try:
                    raw.append((worker, ctx.read(data_in["s3Uri"], role_arn, field="annotationData.s3Uri")))
                except ServiceError as exc:
                    problems.append(Rejection(object_id, worker, f"cannot read answer: {exc.description}",
                                              dict(data_in)))
            else:
                problems.append(Rejection(object_id, worker, "annotationData has neither content nor s3Uri",
                                          dict(data_in)))
        result = collect(object_id, raw, allowed)
        result.rejected[:0] = problems
        objects.append(result)
    return objects


def _decode_file(data: bytes) -> Any:
    try:
        return fastjson.loads(data)
    except ValueError as exc:
        raise BadRequest(f"annotation file is not valid JSON ({exc})") from None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch builds millions of acyclic containers.

    Parsing and consolidating 100,000 objects allocates millions of dicts/tuples that never form
    cycles; generational collections over them cost ~20 % of the run and free nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def consolidation_response(objects: Sequence[ObjectAnswers], result: ConsolidationResult,
                           attribute: str) -> list[dict[str, Any]]:
    """The exact post-annotation response: one entry per data object."""
    return [response_entry(obj.object_id, attribute, content)
            for obj, content in zip(objects, result.contents(), strict=True)]


def post_annotation_with_report(event: Any, ctx: CallbackContext) -> tuple[list[dict[str, Any]], ConsolidationResult]:
    """Post-annotation plus the consolidation result (job report) for callers that want it."""
    request = parse_post_request(event, ctx.config.labels)
    data = ctx.read(request.s3_uri, request.role_arn)
    with gc_paused():
        objects = load_annotations(data, request.labels, ctx, request.role_arn)
        result = consolidate(objects, request.labels, ctx.config.consolidation)
        response = consolidation_response(objects, result, request.attribute)
    report = result.report
    logger.info("consolidated a batch", extra={
        "job": job_name(request.job_arn), "objects": report.objects, "rejected": len(report.rejected),
        "flagged": report.flagged})
    for rejection in report.rejected[:50]:
        logger.warning("malformed answer excluded", extra=rejection.to_json())
    return response, result


def post_annotation(event: Any, ctx: CallbackContext) -> list[dict[str, Any]]:
    """Ground Truth post-annotation: the annotation file → one consolidated entry per data object."""
    response, _ = post_annotation_with_report(event, ctx)
    return response
