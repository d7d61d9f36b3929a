"""Benchmark: a full manifest build over N instances vs a naive per-instance listing, and an incremental build.

Run: ``.venv/bin/python benchmarks/bench_manifest.py --instances 100000 --index sqlite|postgresql``.
Starts a fresh Orthanc 1.10 (SQLite index, or the PostgreSQL index plugin on a throw-away cluster),
loads N tiny DX instances (8x8 pixels, ``--per-series`` per series, 2 series per study, uploaded
concurrently), then measures in the same run:

- the full build (``dicomlab_manifest``'s engine, file:// store) in instances/s;
- the naive baseline: ``GET /instances`` then ``GET /instances/{id}/simplified-tags`` one by one —
  timed on ``--naive-sample`` instances and extrapolated to N (the listing call is timed in full);
- an incremental build after loading ``--incremental`` new instances in new studies (the usual case:
  the changes feed names the new series, whose instance lists come in one request each), and again
  with the same number added to existing series (the worst case: one request per new instance);
- the peak Python heap of a second full build (tracemalloc), to show memory does not grow with N.

With ``--write``, results are merged into ``benchmarks/results/manifest.json`` under ``<index>@<N>``. The load
generator, Orthanc and the builder share the machine's CPUs, so the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_core.config import Secret
from dicomlab_core.errors import UpstreamError
from dicomlab_core.orthanc import OrthancClient
from dicomlab_manifest.config import Config
from dicomlab_manifest.service import ManifestService, pin_environment

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "manifest.json"
DX = "1.2.840.10008.5.1.4.1.1.1.1"


def series_files(count: int, study_uid: str, patient: str, series_number: int) -> list[bytes]:
    """``count`` tiny DX files of one series (one dataset template, new SOP Instance UID each)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX
    ds.PatientID, ds.PatientName = patient, "Bench^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.StudyDate = "DX", "CHEST", "20240101"
    ds.StudyDescription, ds.SeriesDescription, ds.SeriesNumber = "CHEST PA", "PA", series_number
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 7, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(64)
    files = []
    for number in range(1, count + 1):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


def upload(client: OrthancClient, data: bytes) -> None:
    """Store one file; re-sent up to 3 times on a server error (storing the same instance again is a no-op)."""
    for attempt in range(4):
        try:
            client.upload_instance(data)
            return
        except UpstreamError:
            if attempt == 3:
                raise
            time.sleep(0.5 * (attempt + 1))


def load(client: OrthancClient, instances: int, per_series: int, workers: int, prefix: str) -> dict[str, float]:
    """Upload ``instances`` new instances in new studies; returns the ingest timing."""
    started = time.perf_counter()
    done = 0
    with ThreadPoolExecutor(workers) as pool:
        study = 0
        while done < instances:
            study_uid, patient = generate_uid(), f"{prefix}{study:06d}"
            batch: list[bytes] = []
            for series in range(2):
                count = min(per_series, instances - done - len(batch))
                if count > 0:
                    batch.extend(series_files(count, study_uid, patient, series + 1))
            list(pool.map(lambda data: upload(client, data), batch))
            done += len(batch)
            study += 1
            if study % 50 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  loaded {done}/{instances} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    return {"instances": instances, "seconds": round(seconds, 2), "per_second": round(instances / seconds, 1)}


def load_into_existing_series(client: OrthancClient, count: int, workers: int) -> None:
    """Add ``count`` instances to existing series (same study/series UIDs as series already stored)."""
    series_ids = client.get_json("/series", {"since": 0, "limit": max(1, count // 10)})
    files: list[bytes] = []
    for series_id in series_ids:
        series = client.get_json(f"/series/{series_id}")
        study = client.get_json(f"/studies/{series['ParentStudy']}")
        one = client.get_json(f"/instances/{series['Instances'][0]}/simplified-tags")
        ds_files = series_files(min(10, count - len(files)), study["MainDicomTags"]["StudyInstanceUID"],
                                one["PatientID"], 1)
        from pydicom import dcmread

        for data in ds_files:
            ds = dcmread(io.BytesIO(data))
            ds.SeriesInstanceUID = series["MainDicomTags"]["SeriesInstanceUID"]
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            files.append(buffer.getvalue())
        if len(files) >= count:
            break
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda data: upload(client, data), files))


def naive(client: OrthancClient, total: int, sample: int) -> dict[str, Any]:
    """``GET /instances`` then one ``simplified-tags`` request per instance (timed on ``sample`` of them)."""
    started = time.perf_counter()
    ids = client.get_json("/instances")
    list_seconds = time.perf_counter() - started
    sample_ids = ids[:sample]
    started = time.perf_counter()
    for instance_id in sample_ids:
        tags = client.instance_tags(instance_id)
        assert tags["Modality"] == "DX"
    per_instance = (time.perf_counter() - started) / len(sample_ids)
    estimated = list_seconds + per_instance * total
    return {"listing_seconds": round(list_seconds, 3), "sampled_instances": len(sample_ids),
            "ms_per_instance": round(per_instance * 1000, 3), "estimated_seconds": round(estimated, 1),
            "per_second": round(total / estimated, 1)}


def timed_build(service: ManifestService, name: str, **spec: Any) -> tuple[float, dict[str, Any]]:
    parsed = service.parse({"name": name, **spec})
    started = time.perf_counter()
    summary = service.builder(parsed, service.config.state_dir / name).run()
    return time.perf_counter() - started, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--index", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--per-series", type=int, default=100)
    parser.add_argument("--upload-workers", type=int, default=4)
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--incremental", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8, help="builder's concurrent Orthanc requests")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON, with --write")
    parser.add_argument("--write", action="store_true", help="merge the results into --output (without it: print only)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-manifest-"))
    tmp.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data directory below
    postgres = PostgresServer(tmp / "postgres").start() if args.index == "postgresql" else None
    orthanc = OrthancServer(tmp / "orthanc", postgres=postgres).start()
    client = pin_environment(orthanc.client(pool_size=32))  # the builder's client is pinned the same way
    result: dict[str, Any] = {"instances": args.instances, "index": args.index, "per_series": args.per_series}
    try:
        result["orthanc_version"] = client.system()["Version"]
        print(f"loading {args.instances} instances ({args.index} index)...", file=sys.stderr)
        result["ingest"] = load(client, args.instances, args.per_series, args.upload_workers, "B")
        config = Config(orthanc=orthanc.settings(), patient_key_secret=Secret("bench"), service_token=Secret("x"),
                        store_url=f"file://{tmp / 'store'}", state_dir=tmp / "state", workers=args.workers)
        service = ManifestService(config)

        result["load_average_before_build"] = os.getloadavg()
        seconds, summary = timed_build(service, "full", modalities=["DX"])
        assert summary["instances"] == args.instances, summary["counts"]
        result["full_build"] = {"seconds": round(seconds, 2), "per_second": round(args.instances / seconds, 1),
                                "manifest_bytes": summary["bytes"]}
        print(f"full build: {seconds:.2f} s ({args.instances / seconds:.0f}/s)", file=sys.stderr)

        result["naive"] = naive(client, args.instances, min(args.naive_sample, args.instances))
        result["speedup_vs_naive"] = round(result["full_build"]["per_second"] / result["naive"]["per_second"], 1)
        print(f"naive: {result['naive']['per_second']:.0f}/s, speed-up {result['speedup_vs_naive']}x",
              file=sys.stderr)

        tracemalloc.start()
        timed_build(service, "full-traced", modalities=["DX"])
        result["full_build"]["peak_python_heap_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()

        result["incremental_ingest"] = load(client, args.incremental, args.per_series, args.upload_workers, "N")
        seconds, summary = timed_build(service, "incremental", modalities=["DX"], since_manifest="full")
        assert summary["instances"] == args.incremental, summary["counts"]
        result["incremental_new_series"] = {"instances": args.incremental, "seconds": round(seconds, 3)}
        print(f"incremental (new studies): {seconds:.3f} s", file=sys.stderr)

        load_into_existing_series(client, args.incremental, args.upload_workers)
        seconds, summary = timed_build(service, "incremental-existing", modalities=["DX"],
                                       since_manifest="incremental")
        result["incremental_existing_series"] = {"instances": summary["instances"], "seconds": round(seconds, 3)}
        print(f"incremental (existing series): {seconds:.3f} s", file=sys.stderr)
        service.close()
    finally:
        client.close()
        orthanc.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    result["targets"] = {"speedup_vs_naive>=20": result["speedup_vs_naive"] >= 20,
                         "full_build>=5000/s": result["full_build"]["per_second"] >= 5000,
                         "incremental<2s": result["incremental_new_series"]["seconds"] < 2}
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    if args.write:
        existing = json.loads(args.output.read_text()) if args.output.exists() else {}
        existing[f"{args.index}@{args.instances}"] = result
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
