"""Benchmark: consolidate one Ground Truth annotation file of 100,000 data objects × 3 readers.

End to end, as the post-annotation callback runs it: read the file from the object store (file://),
parse every worker answer (JSON strings inside JSON; 14 CheXpert findings each, some ROIs, 10 % in the
reference sample's three-level shape, 0.5 % malformed), consolidate (Dawid–Skene per finding + majority
vote + agreement statistics), build the response and serialize it to JSON. Target: ≤ 10 s.

    .venv/bin/python benchmarks/bench_consolidation.py [--objects 100000] [--readers 3]

With ``--write``, writes ``benchmarks/results/consolidation.json`` (timings per phase, machine details, accuracy of the
consolidated labels against the simulated truth).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_info import machine

from dicomlab_core import fastjson
from dicomlab_core.config import Secret
from dicomlab_core.labels import CHEXPERT_LABELS, NO_FINDING
from dicomlab_core.tokens import KeyRing, signer_from_entries
from dicomlab_labeling.config import LabelingConfig
from dicomlab_labeling.groundtruth.callbacks import CallbackContext, post_annotation_with_report

TARGET_SECONDS = 10.0
RESULTS = Path(__file__).resolve().parent / "results" / "consolidation.json"
STATES = ("absent", "present")


def generate(n_objects: int, n_readers: int, seed: int = 7) -> tuple[list[dict[str, Any]], np.ndarray]:
    """A synthetic annotation file and the truth it was drawn from (objects × labels, 0/1)."""
    rng = np.random.default_rng(seed)
    labels = list(CHEXPERT_LABELS)
    prevalence = rng.uniform(0.03, 0.3, len(labels))
    truth = rng.random((n_objects, len(labels))) < prevalence
    nf = labels.index(NO_FINDING)
    truth[:, nf] = ~truth[:, [i for i in range(len(labels)) if i != nf]].any(axis=1)
    pool = 40
    accuracy = rng.uniform(0.75, 0.97, pool)
    readers = np.array([rng.choice(pool, n_readers, replace=False) for _ in range(n_objects)])
    flips = rng.random((n_objects, n_readers, len(labels))) > accuracy[readers][:, :, None]
    said = truth[:, None, :] ^ flips
    said[:, :, nf] = ~said[:, :, [i for i in range(len(labels)) if i != nf]].any(axis=2)  # template rule
    style = rng.random((n_objects, n_readers))
    entries = []
    for i in range(n_objects):
        annotations = []
        for r in range(n_readers):
            row = said[i, r]
            if style[i, r] < 0.005:
                content = '{"findings": {"Edema": "maybe"'  # truncated / malformed
            elif style[i, r] < 0.105:
                disease = {label: bool(v) for label, v in zip(labels, row, strict=True)}
                ticked = [label for label, v in zip(labels, row, strict=True) if v]
                content = json.dumps({"disease": disease, "labels": json.dumps(
                    {"label": ticked, "imageurl": f"https://proxy/instances/{i}/file", "ROI": {}})})
            else:
                findings = {label: STATES[int(v)] for label, v in zip(labels, row, strict=True)}
                rois = [{"tool": "rectangle", "finding": labels[j], "points": [[10.0, 20.0], [110.0, 140.0]]}
                        for j in np.flatnonzero(row)[:2] if labels[j] != NO_FINDING]
                content = json.dumps({"findings": findings, "rois": rois, "sopInstanceUid": f"1.2.826.0.1.{i}",
                                      "timeSpentSeconds": 20 + (i % 50)})
            annotations.append({"workerId": f"private.us-east-1.reader{readers[i, r]:02d}",
                                "annotationData": {"content": content}})
        entries.append({"datasetObjectId": str(i), "dataObject": {"content": f"orthanc-{i:08d}"},
                        "annotations": annotations})
    return entries, truth


def python_speed() -> float:
    """CPU seconds for 10 million additions in a Python loop (what an idle modern core takes is in
    ``benchmarks/results/README.md``).

    The ratio to that says how much slower this machine (shared, throttled) runs Python right now.
    """
    started = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return round(time.process_time() - started, 3)


def bench_machine() -> dict[str, Any]:
    return machine(numpy=np.__version__, max_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   python_loop_1e7_cpu_seconds=python_speed())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON, with --write")
    parser.add_argument("--write", action="store_true", help="write the results to --out (without it: print only)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    entries, truth = generate(args.objects, args.readers)
    generate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "consolidation-request.json"
        path.write_text(json.dumps(entries))
        size = path.stat().st_size
        del entries
        config = LabelingConfig(token_keys=(Secret(KeyRing.generate_entry()),), store_url=f"file://{tmp}")
        ctx = CallbackContext(config=config, orthanc=None,  # type: ignore[arg-type]  # not used by consolidation
                              signer=signer_from_entries(config.token_keys))
        event = {"version": "2018-10-16", "labelingJobArn": "arn:aws:sagemaker:us-east-1:1:labeling-job/bench",
                 "labelCategories": list(CHEXPERT_LABELS), "labelAttributeName": "findings",
                 "payload": {"s3Uri": f"file://{path}"}}
        logging.disable(logging.WARNING)  # one warning line per malformed answer is not what we time
        load_at_start = [round(v, 2) for v in os.getloadavg()]
        c0, t0 = time.process_time(), time.perf_counter()
        response, result = post_annotation_with_report(event, ctx)
        c1, t1 = time.process_time(), time.perf_counter()
        body = fastjson.dumps(response)  # what the HTTP endpoint writes
        c2, t2 = time.process_time(), time.perf_counter()

    labels = list(CHEXPERT_LABELS)
    values = np.array([[label.findings[name].value == "present" for name in labels] for label in result.labels])
    decided = np.array([[label.findings[name].value != "uncertain" for name in labels] for label in result.labels])
    accuracy = float(((values == truth) & decided).sum() / decided.sum())
    total = t2 - t0
    report = {
        "benchmark": "consolidation", "objects": args.objects, "readers_per_object": args.readers,
        "labels": len(labels), "annotation_file_bytes": size, "response_bytes": len(body),
        "wall_seconds": {"generate_input_excluded": round(generate_s, 3),
                         "read_parse_consolidate_respond": round(t1 - t0, 3), "serialize_response": round(t2 - t1, 3),
                         "end_to_end": round(total, 3)},
        "cpu_seconds": {"read_parse_consolidate_respond": round(c1 - c0, 3), "serialize_response": round(c2 - c1, 3),
                        "end_to_end": round(c2 - c0, 3)},
        "objects_per_second": round(args.objects / total), "target_seconds": TARGET_SECONDS,
        "meets_target": total <= TARGET_SECONDS,
        "note": "one process, one thread; wall time depends on other load on the machine (see load average), "
                "CPU time is what the work itself costs",
        "rejected_answers": len(result.report.rejected),
        "methods": {m: sum(1 for label in result.labels if label.method == m) for m in ("dawid-skene", "majority")},
        "accuracy_vs_simulated_truth": round(accuracy, 4),
        "machine": {**bench_machine(), "load_average_at_start_1m_5m_15m": load_at_start},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
