"""Batch prediction: a trained model over an input manifest → the same lines plus the model's opinion.

``dicomlab train predict --model M --manifest IN --out OUT`` writes, for every usable input line, the
line unchanged plus

- ``model-predictions``: ``{label: probability}`` (sigmoid of each logit, rounded to 6 digits);
- ``model-uncertainty``: a number in 0..1 — the key the labeling queue's ``uncertainty-first``
  strategy reads. ``--uncertainty entropy`` (default, :func:`uncertainty`), ``mc-dropout`` or ``tta``
  with ``--passes T`` (see :mod:`dicomlab_training.uncertainty`; with T passes the probabilities are
  the mean over passes);
- ``model-version``: ``<run>@sha256:<12 hex>`` (the run name when known, and a hash of the weights).

Unusable lines (not JSON, no reference, image missing or undecodable) are not in ``OUT``; each is
listed with its 1-based line number and reason in the sidecar ``OUT.skipped.jsonl``.

The model is a state-dict file (``<run>/models/best.pt``: labels and settings are read from the run's
``report.json``/``config.json``), a run folder, or an exported bundle folder (``configs/metadata.json``
+ ``models/model.pt``, see :mod:`dicomlab_training.export`).

Images go through the training package's decode-once cache (:class:`~dicomlab_training.cache.DecodeCache`,
same pixel pipeline, same key), so images predicted now and labelled later are never decoded twice.

Resumable: work is done in chunks; each finished chunk is written atomically as one part object
``OUT.parts/part-NNNNNN.jsonl`` (through the object store, so ``s3://`` works too). A re-run with the
same ``OUT`` reads the parts, skips the lines already done, and finally assembles ``OUT`` in input
order and removes the parts. Parts written by another model version are refused (clear error).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_core.groundtruth import ManifestError, dump_line, parse_manifest_line
from dicomlab_core.objectstore import ObjectStore, open_store, split_uri
from dicomlab_training.cache import DecodeCache
from dicomlab_training.config import ModelConfig, TrainConfig
from dicomlab_training.data import make_fetcher
from dicomlab_training.manifest import Sample, read_manifest_text
from dicomlab_training.model import Classifier, _read, build_model, clean_state_dict
from dicomlab_training.uncertainty import UncertaintyOptions, mean_entropy, score

logger = logging.getLogger(__name__)

PREDICTIONS_KEY = "model-predictions"
UNCERTAINTY_KEY = "model-uncertainty"
"""Read by the labeling service (``dicomlab_labeling.workflow.jobs.UNCERTAINTY_KEY``) for uncertainty-first."""
VERSION_KEY = "model-version"
UNCERTAINTY_MEASURE = "mean-binary-entropy"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference with what is needed to feed it and to name it."""

    model: Classifier
    labels: tuple[str, ...]
    size: int
    cache_dtype: str
    version: str


@dataclass
class PredictResult:
    out: str
    skipped_uri: str
    lines: int
    predicted: int
    skipped: dict[str, int]
    resumed: int
    """Lines that were already done by an earlier, interrupted run."""
    model_version: str
    seconds: float
    images_per_second: float
    uncertainty: str = UNCERTAINTY_MEASURE
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"out": self.out, "skipped_uri": self.skipped_uri, "lines": self.lines, "predicted": self.predicted,
                "skipped": self.skipped, "resumed": self.resumed, "model_version": self.model_version,
                "uncertainty": self.uncertainty, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2), **self.extra}


# ------------------------------------------------------------------------------------------ uncertainty


def uncertainty(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Mean binary entropy over labels, in bits (0 = every label certain, 1 = every label at 0.5).

    The default ``--uncertainty`` measure. Why: in the active-learning comparison over seeds (README,
    "Model in the loop"; ``benchmarks/results/loop-seeds/``) neither MC-dropout nor test-time
    augmentation picked better images than it — none of the three beat random selection at that
    scale — and it needs one forward pass where they need ``--passes``. It is bounded in 0..1 as the
    queue expects, and for independent sigmoid outputs it is the expected information of labelling the
    image under the model's own beliefs. The other measures: :mod:`dicomlab_training.uncertainty`.
    """
    return mean_entropy(probs)


# ------------------------------------------------------------------------------------------ model


def _store_and_key(uri: str) -> tuple[ObjectStore, str]:
    store_url, key = split_uri(uri)
    return open_store(store_url), key


def _try_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(store.get_bytes(key))
    except (NotFound, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _folder_exists(uri: str, key: str) -> bool:
    try:
        return open_store(uri).exists(key)
    except (BadRequest, OSError):
        return False


def load_for_inference(model_uri: str, config: TrainConfig) -> LoadedModel:
    """Resolve ``model_uri`` (bundle folder, run folder or state-dict file) into a :class:`LoadedModel`.

    Labels, input size and architecture come from the bundle's metadata or the run's report/config;
    when neither exists, from ``config`` (``--labels``, ``--size``, ``--set model.arch=...``).
    """
    uri = model_uri.rstrip("/")
    settings: dict[str, Any] = {}
    labels: Sequence[str] = ()
    run_name = ""
    weights_uri = uri
    if _folder_exists(uri, "configs/metadata.json"):  # an exported bundle
        meta = json.loads(open_store(uri).get_bytes("configs/metadata.json"))
        labels = meta.get("labels") or ()
        settings = meta.get("training_config") or {}
        run_name = settings.get("run_name") or ""
        weights_uri = f"{uri}/models/model.pt"
        root = uri.rsplit("/", 1)[0] if uri.endswith("/bundle") else ""
    elif _folder_exists(uri, "models/best.pt"):  # a run folder
        weights_uri, root = f"{uri}/models/best.pt", uri
    else:
        root = uri.rsplit("/models/", 1)[0] if "/models/" in uri else ""
    if root:
        store = open_store(root)
        report = _try_json(store, "report.json") or {}
        recorded = report.get("config") or _try_json(store, "config.json") or {}
        settings = settings or recorded
        labels = labels or report.get("labels") or recorded.get("labels") or ()
        run_name = run_name or str(report.get("run") or recorded.get("run_name") or root.rsplit("/", 1)[-1])
    try:
        raw = _read(weights_uri)
    except (NotFound, FileNotFoundError, IsADirectoryError):
        raise BadRequest(f"--model {model_uri}: no model file at {weights_uri}") from None
    labels = tuple(labels) or config.labels
    if not labels:
        raise BadRequest(f"--model {model_uri}: no label names found (no bundle metadata or run report); "
                         "pass --labels")
    pixels = settings.get("pixels") or {}
    model_settings = settings.get("model") or {}
    size = int(pixels.get("size") or config.pixels.size)
    cache_dtype = str(pixels.get("cache_dtype") or config.pixels.cache_dtype)
    arch = str(model_settings.get("arch") or config.model.arch)
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files: one clear message
        raise BadRequest(f"--model {model_uri}: not a PyTorch state dict ({type(exc).__name__})") from None
    if not isinstance(state, Mapping):
        raise BadRequest(f"--model {model_uri}: not a state dict")
    model = build_model(ModelConfig(arch=arch), len(labels))
    try:
        model.load_state_dict(clean_state_dict(state))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BadRequest(f"--model {model_uri}: weights do not fit {arch} with {len(labels)} labels ({first})") \
            from None
    digest = hashlib.sha256(raw).hexdigest()[:12]
    version = f"{run_name}@sha256:{digest}" if run_name else f"sha256:{digest}"
    return LoadedModel(model=model.eval(), labels=labels, size=size, cache_dtype=cache_dtype, version=version)


# ------------------------------------------------------------------------------------------ input


@dataclass(frozen=True)
class InputLine:
    number: int
    """1-based line number in the input manifest."""
    data: dict[str, Any] | None
    sample: Sample | None
    problem: tuple[str, str] | None = None
    """(reason, detail) when the line itself is unusable."""
    digest: str = ""
    """Short hash of the line's text: a resumed run checks that the input did not change under it."""


def read_input(manifest_uri: str, limit: int = 0) -> list[InputLine]:
    """Every non-blank line of the input manifest (the first ``limit`` when > 0), parsed or with a problem."""
    try:
        text = read_manifest_text(manifest_uri)
    except NotFound:
        raise BadRequest(f"--manifest: no manifest at {manifest_uri}") from None
    except UnicodeDecodeError:
        raise BadRequest(f"--manifest {manifest_uri}: not UTF-8 text") from None
    lines: list[InputLine] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if limit and len(lines) >= limit:
            break
        digest = hashlib.sha256(raw.strip().encode()).hexdigest()[:12]
        try:
            parsed = parse_manifest_line(raw, where=f"manifest line {number}")
        except ManifestError as exc:
            lines.append(InputLine(number, None, None, ("bad_manifest_line", exc.description), digest))
            continue
        data = dict(parsed.data)
        sop = parsed.sop_uid
        sample = Sample(key=sop or parsed.ref, source=parsed.ref, sop_uid=sop, study_uid=parsed.study_uid,
                        series_uid=parsed.series_uid)
        lines.append(InputLine(number, data, sample, None, digest))
    return lines


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class PredictOptions:
    model: str
    manifest: str
    out: str
    limit: int = 0
    batch_size: int = 64
    chunk: int = 512
    """Lines per resumable part (decoded, predicted and written together)."""
    uncertainty: UncertaintyOptions = field(default_factory=UncertaintyOptions)
    """The uncertainty measure (``--uncertainty``, ``--passes``)."""


def _parts_store(out: str) -> ObjectStore:
    """The folder (or prefix) ``OUT.parts`` that holds the finished chunks of an unfinished run."""
    store_url, key = split_uri(out)
    return open_store(f"{store_url.rstrip('/')}/{key}.parts")


def _load_parts(parts: ObjectStore, out: str, version: str) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    for part in sorted(parts.list()):
        if not part.endswith(".jsonl"):
            continue
        for raw in parts.get_bytes(part).decode("utf-8").splitlines():
            if not raw.strip():
                continue
            record = json.loads(raw)
            if record.get("version") != version:
                raise BadRequest(f"--out {out}: unfinished results of another model ({record.get('version')}) "
                                 f"are in {parts.url}; remove them or choose another --out")
            done[int(record["line"])] = record
    return done


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise BadRequest("--device cuda: CUDA is not available")
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_predict(config: TrainConfig, options: PredictOptions) -> PredictResult:
    """Predict every line of ``options.manifest``; see the module docstring for the outputs."""
    started = time.perf_counter()
    if options.batch_size < 1 or options.chunk < 1:
        raise BadRequest("--batch-size and --chunk must be at least 1")
    options.uncertainty.check()
    if config.threads:
        torch.set_num_threads(config.threads)
    loaded = load_for_inference(options.model, config)
    device = _device(config)
    model = loaded.model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    lines = read_input(options.manifest, options.limit)
    store, key = _store_and_key(options.out)
    parts = _parts_store(options.out)
    # Parts record the model and the measure: a resumed run must not mix two of either.
    part_version = loaded.version if options.uncertainty.measure == "entropy" \
        else f"{loaded.version}|{options.uncertainty.key}"
    done = _load_parts(parts, options.out, part_version)
    digests = {line.number: line.digest for line in lines}
    changed = [n for n, record in done.items() if n in digests and record.get("input") != digests[n]]
    if changed:
        raise BadRequest(f"--out {options.out}: unfinished results in {parts.url} were made from another input "
                         f"(manifest line {changed[0]} differs); remove them or choose another --out")
    resumed = sum(1 for line in lines if line.number in done)
    todo = [line for line in lines if line.number not in done]
    cache = DecodeCache(config.cache_dir, loaded.size, loaded.cache_dtype, config.cache_url)
    fetcher = make_fetcher(config) if any(line.sample is not None for line in todo) else None
    part_number = len(list(parts.list()))
    images_done = 0
    infer_seconds = 0.0
    for start in range(0, len(todo), options.chunk):
        chunk = todo[start:start + options.chunk]
        records = _predict_chunk(chunk, cache, fetcher, loaded, model, device, options, part_version)
        images_done += sum(1 for r in records if "output" in r)
        infer_seconds = time.perf_counter() - started
        part_number += 1
        payload = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        parts.put_bytes(f"part-{part_number:06d}.jsonl", payload, "application/x-ndjson")
        done.update({int(r["line"]): r for r in records})
        logger.info("prediction chunk written", extra={"part": part_number, "lines": len(records)})
    result = _assemble(store, key, parts, lines, done, loaded, resumed, started, images_done, infer_seconds)
    result.uncertainty = options.uncertainty.name
    if options.uncertainty.measure != "entropy":
        result.extra["passes"] = options.uncertainty.passes
    return result


def _predict_chunk(chunk: Sequence[InputLine], cache: DecodeCache, fetcher: Any, loaded: LoadedModel,
                   model: Classifier, device: torch.device, options: PredictOptions,
                   part_version: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    usable = [line for line in chunk if line.sample is not None]
    samples = [line.sample for line in usable if line.sample is not None]
    view = cache.build(samples, fetcher) if samples and fetcher is not None else None
    reasons = cache.skip_reasons([s.key for s in samples]) if samples else {}
    have = [i for i, line in enumerate(usable) if view is not None and view.rows[i] >= 0]
    probs = np.zeros((0, len(loaded.labels)), dtype=np.float32)
    if have and view is not None:
        rows = view.rows[np.asarray(have)]
        order = np.argsort(rows, kind="stable")
        images = np.empty((len(rows), *view.images.shape[1:]), dtype=view.images.dtype)
        images[order] = view.images[rows[order]]  # sorted reads from the memory map
        probs, scores = score(model, images, device, options.batch_size, options.uncertainty)
    else:
        scores = np.zeros(0)
    position = {i: j for j, i in enumerate(have)}
    where = {line.number: i for i, line in enumerate(usable)}
    for line in chunk:
        base = {"line": line.number, "input": line.digest, "version": part_version}
        if line.sample is None or line.data is None:
            reason, detail = line.problem or ("bad_manifest_line", "")
            records.append({**base, "skip": reason, "detail": detail})
            continue
        j = position.get(where[line.number])
        if j is None:
            records.append({**base, "skip": reasons.get(line.sample.key, "not_cached"),
                            "sop-instance-uid": line.sample.sop_uid, "source": line.sample.source})
            continue
        output = dict(line.data)
        output[PREDICTIONS_KEY] = {label: round(float(p), 6) for label, p in zip(loaded.labels, probs[j],
                                                                                   strict=True)}
        output[UNCERTAINTY_KEY] = round(float(scores[j]), 6)
        output[VERSION_KEY] = loaded.version
        records.append({**base, "output": output})
    return records


def _assemble(store: ObjectStore, key: str, parts: ObjectStore, lines: Sequence[InputLine],
              done: Mapping[int, dict[str, Any]], loaded: LoadedModel, resumed: int, started: float, images_done: int,
              infer_seconds: float) -> PredictResult:
    outputs: list[str] = []
    skips: list[str] = []
    counts: dict[str, int] = {}
    for line in lines:
        record = done[line.number]
        if "output" in record:
            outputs.append(dump_line(record["output"]))
            continue
        counts[record["skip"]] = counts.get(record["skip"], 0) + 1
        skip = {"line": line.number, "reason": record["skip"]}
        skip.update({k: record[k] for k in ("source", "sop-instance-uid", "detail") if record.get(k)})
        skips.append(dump_line(skip))
    store.put_bytes(key, ("\n".join(outputs) + "\n" if outputs else "").encode("utf-8"), "application/x-ndjson")
    skipped_key = f"{key}.skipped.jsonl"
    store.put_bytes(skipped_key, ("\n".join(skips) + "\n" if skips else "").encode("utf-8"), "application/x-ndjson")
    for part in list(parts.list()):
        parts.delete(part)
    if parts.url.startswith("file://"):
        with contextlib.suppress(OSError):
            Path(parts.url[len("file://"):]).rmdir()
    seconds = time.perf_counter() - started
    rate = images_done / infer_seconds if infer_seconds > 0 and images_done else 0.0
    logger.info("prediction finished", extra={"predicted": len(outputs), "skipped": len(skips),
                                              "images_per_second": round(rate, 2)})
    return PredictResult(out=store.uri(key), skipped_uri=store.uri(skipped_key), lines=len(lines),
                         predicted=len(outputs), skipped=counts, resumed=resumed, model_version=loaded.version,
                         seconds=seconds, images_per_second=rate if not math.isnan(rate) else 0.0)
