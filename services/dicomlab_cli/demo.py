"""``dicomlab demo``: the whole loop on the local stack, from synthetic images to a trained model.

1. start the local stack (Orthanc, proxy, manifest, labeling);
2. generate a synthetic chest X-ray set with known findings and upload it to Orthanc;
3. build a Ground-Truth-format manifest through the manifest service's HTTP API;
4. create a self-hosted labeling job with 3 readers and simulate them through the same HTTP API the
   browser UI uses (realistic reader noise, one unreliable reader);
5. consolidate and export the output manifest, and write DICOM SR back to Orthanc;
6. train DenseNet121 on CPU at a small resolution and evaluate it on held-out patients;
7. train it again on soft labels (the Dawid–Skene posteriors) and compare hard vs soft on the held-out
   patients' true findings (:mod:`dicomlab_cli.demo_extras`; ``--no-soft`` skips it);
8. with ``--loop``: active learning vs random on the demo's images, over seeds;
9. print a summary and leave the labeling UI running for a person to try.

Every step is idempotent: a second run reuses what the first one made (same seed, same data, same
manifest, same job) and only repeats what is missing, so running it again is safe.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from dicomlab_cli import stack
from dicomlab_cli.labeling_api import LabelingSession
from dicomlab_cli.processes import StackError

logger = logging.getLogger(__name__)

READERS = (("reader1", 0.95), ("reader2", 0.92), ("reader3", 0.70))
"""Simulated readers and their per-finding accuracy; reader3 is the unreliable one."""


@dataclass(frozen=True)
class DemoOptions:
    patients: int
    size: int
    train_size: int
    epochs: int
    seed: int
    readers_per_image: int
    monitoring: bool = False
    compare_soft: bool = True
    loop: bool = False
    loop_rounds: int = 4
    loop_budget: int = 20
    loop_seeds: tuple[int, ...] = (0, 1, 2)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the whole loop on the local stack: images → manifest → labels → model")
    parser.add_argument("--patients", type=int, default=150, help="synthetic patients (≈1.6 images each)")
    parser.add_argument("--size", type=int, default=512, help="synthetic image size in pixels")
    parser.add_argument("--train-size", type=int, default=96, help="training resolution in pixels")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs")
    parser.add_argument("--seed", type=int, default=7, help="seed for data, sampling, readers and training")
    parser.add_argument("--readers", type=int, default=3, help="readers per image")
    parser.add_argument("--monitoring", action="store_true", help="also start Prometheus and a Pushgateway")
    parser.add_argument("--no-soft", action="store_true",
                        help="skip the second training run on soft labels (the hard vs soft comparison)")
    parser.add_argument("--loop", action="store_true",
                        help="also run active learning vs random on the demo's images (3 seeds, tiny model; "
                             "several minutes on a CPU)")
    parser.add_argument("--loop-rounds", type=int, default=4, help="loop rounds after the initial set (default 4)")
    parser.add_argument("--loop-budget", type=int, default=20,
                        help="images labelled per loop round (default 20; shrunk to fit a small demo set)")
    parser.add_argument("--loop-seeds", default="0,1,2", help="loop seeds (default 0,1,2)")
    parser.set_defaults(func=_run)


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def progress(label: str) -> Any:
    """A one-line progress printer: ``progress("uploading")(done, total)``."""
    started = time.monotonic()
    interactive = sys.stdout.isatty()
    shown = [-1]

    def report(done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if not interactive and quarter == shown[0] and done < total:
            return  # in a log, one line per quarter instead of a spinning counter
        shown[0] = quarter
        rate = done / max(time.monotonic() - started, 1e-6)
        line = f"    {label}: {done}/{total} ({rate:.0f}/s)"
        if interactive:
            print("\r" + line, end="\n" if done >= total else "", flush=True)
        else:
            print(line, flush=True)

    return report


def _run(args: argparse.Namespace) -> int:
    options = DemoOptions(patients=args.patients, size=args.size, train_size=args.train_size, epochs=args.epochs,
                          seed=args.seed, readers_per_image=args.readers, monitoring=args.monitoring,
                          compare_soft=not args.no_soft, loop=args.loop, loop_rounds=args.loop_rounds,
                          loop_budget=args.loop_budget, loop_seeds=_seeds(args.loop_seeds))
    summary = run_demo(options)
    print_summary(summary)
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"--loop-seeds {text!r}: comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise SystemExit("--loop-seeds: at least one seed")
    return seeds


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run every step; returns the summary (also written to ``<run dir>/demo/summary.json``)."""
    step("starting the local stack")
    stack.up(monitoring=options.monitoring)
    ctx, status = stack.require_running()
    for name, item in status.items():
        print(f"    {name:<10} {item['health']:<8} http://127.0.0.1:{item['port']}")
    work = stack.private_dir(ctx.run_dir / "demo")  # the truth file names synthetic patients: owner-only

    truth = load_images(ctx, options, work)
    manifest = build_manifest(ctx, options)
    job = label(ctx, options, manifest, truth)
    export = export_labels(ctx, job)
    config = train_config(ctx, options, export, work)
    training = train(config, options)
    summary: dict[str, Any] = {
        "images": len(truth),
        "patients": options.patients,
        "manifest": manifest,
        "job": job,
        "export": export,
        "training": training,
        "ui": {"url": ctx.url("labeling") + "/", "username": ctx.credentials["admin_username"],
               "password_file": str(ctx.run_dir / "credentials.json")},
    }
    if options.compare_soft:
        from dicomlab_cli.demo_extras import compare_hard_soft, format_comparison

        step("training again on soft labels (Dawid–Skene posteriors) and comparing on the held-out truth")
        summary["labels_comparison"] = compare_hard_soft(config, training, truth, work)
        summary["labels_comparison_file"] = str(work / "labels-comparison.json")
        for line in format_comparison(summary["labels_comparison"]):
            print(f"    {line}", flush=True)
    if options.loop:
        from dicomlab_cli.demo_extras import DemoLoopSettings, fit_budget, run_demo_loop

        settings = fit_budget(DemoLoopSettings(rounds=options.loop_rounds, budget=options.loop_budget,
                                               seeds=options.loop_seeds), len(truth))
        step(f"active learning vs random: {settings.rounds} rounds × {settings.budget} images, "
             f"seeds {', '.join(map(str, settings.seeds))}, tiny DenseNet at {settings.size}²")
        summary["loop"] = run_demo_loop(config, truth, work, settings)
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


# ------------------------------------------------------------------------------------------ steps

def load_images(ctx: stack.LocalContext, options: DemoOptions, work: Path) -> list[dict[str, Any]]:
    """Generate and upload the synthetic set, unless this exact set is already in Orthanc."""
    from dicomlab_core.config import Secret
    from dicomlab_core.orthanc import OrthancClient, OrthancSettings
    from dicomlab_core.synth import SynthConfig, upload_study_set

    step(f"synthetic chest X-rays: {options.patients} patients at {options.size}² (seed {options.seed})")
    config = SynthConfig(patients=options.patients, seed=options.seed, rows=options.size, columns=options.size)
    truth_path = work / f"truth-{options.patients}-{options.size}-{options.seed}.json"
    client = OrthancClient(OrthancSettings(url=ctx.orthanc_url, username=ctx.orthanc_username,
                                           password=Secret(ctx.orthanc_password)))
    if truth_path.exists():
        records: list[dict[str, Any]] = json.loads(truth_path.read_text())
        if records and client.lookup_instance(records[-1]["sop_uid"]) is not None:
            print(f"    already in Orthanc: {len(records)} images (reusing)")
            return records
    records = upload_study_set(config, client, workers=2, progress=progress("uploading"))
    stack.write_private(truth_path, json.dumps(records))
    print(f"    uploaded {len(records)} images; ground truth in {truth_path}")
    return records


def _service_headers(ctx: stack.LocalContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.credentials['service_token']}"}


def build_manifest(ctx: stack.LocalContext, options: DemoOptions) -> dict[str, Any]:
    """Ask the manifest service (HTTP API) for a manifest of every DX/CR image, sampled by seed."""
    step("building the manifest (manifest service, HTTP API)")
    name = f"demo-{options.patients}-{options.size}-{options.seed}"
    base = ctx.url("manifest")
    headers = _service_headers(ctx)
    existing = requests.get(f"{base}/manifests/{name}", headers=headers, timeout=30)
    if existing.status_code == 200:
        summary: dict[str, Any] = existing.json()
        print(f"    reusing manifest {name}")
        return summary
    response = requests.post(f"{base}/manifests?sync=true", headers=headers, timeout=600,
                             json={"name": name, "modalities": ["DX", "CR"], "seed": options.seed})
    if response.status_code != 201:
        raise StackError(f"manifest service answered {response.status_code}: {response.text[:300]}")
    job: dict[str, Any] = response.json()
    result: dict[str, Any] = job.get("result") or job
    print(f"    manifest written: {json.dumps(result.get('counts', result))[:200]}")
    return result


def manifest_uri(manifest: dict[str, Any]) -> str:
    for key in ("manifest", "manifestUri", "uri"):
        value = manifest.get(key)
        if isinstance(value, str):
            return value
    raise StackError(f"the manifest service's answer has no manifest URI: {sorted(manifest)}")


def reader_password(ctx: stack.LocalContext, username: str) -> str:
    """A stable password for a simulated reader, derived from the stack's secret (never stored)."""
    digest = hmac.new(ctx.credentials["session_secret"].encode(), f"demo-reader:{username}".encode(), "sha256")
    return digest.hexdigest()[:24]


def label(ctx: stack.LocalContext, options: DemoOptions, manifest: dict[str, Any],
          truth: list[dict[str, Any]]) -> dict[str, Any]:
    """Create the job and its readers, then let the simulated readers label every image."""
    from dicomlab_labeling.workflow.simulate import simulate_readers

    step(f"self-hosted labeling: a job with {options.readers_per_image} readers per image")
    base = ctx.url("labeling")
    admin = LabelingSession(base, ctx.credentials["admin_username"], ctx.credentials["admin_password"])
    name = f"demo-{options.patients}-{options.size}-{options.seed}"
    readers = []
    for username, accuracy in READERS[: options.readers_per_image]:
        password = reader_password(ctx, username)
        admin.call("POST", "/api/admin/users", expect=(201, 409),
                   json={"username": username, "password": password, "role": "annotator"})
        readers.append((username, password, accuracy))
    jobs = admin.call("GET", "/api/admin/jobs")["jobs"]
    job = next((j for j in jobs if j["name"] == name), None)
    if job is None:
        job = admin.call("POST", "/api/admin/jobs", json={
            "name": name, "manifestUri": manifest_uri(manifest), "readersPerImage": options.readers_per_image,
            "instructions": "Mark each finding present, absent or uncertain; draw a box around what you see.",
            "strategy": "fewest-answers-first"})
    findings_by_sop = {r["sop_uid"]: r["findings"] for r in truth}
    print(f"    {len(readers)} simulated readers labelling {len(truth)} images through the labeling API "
          f"(accuracy {', '.join(f'{u}={a:.2f}' for u, _, a in readers)})", flush=True)
    outcomes = simulate_readers(base, job["id"], readers, findings_by_sop, seed=options.seed)
    stats = {o.username: {"submitted": o.submitted, "skipped": o.skipped, "errors": len(o.errors)} for o in outcomes}
    for outcome in outcomes:
        if outcome.errors:
            raise StackError(f"reader {outcome.username} hit errors: {outcome.errors[:3]}")
        print(f"    {outcome.username}: {outcome.submitted} answers submitted", flush=True)
    # A second job over the same images, one reader each, left open for a person to try the UI with.
    try_name = f"{name}-try-it"
    if not any(j["name"] == try_name for j in jobs):
        admin.call("POST", "/api/admin/jobs", json={
            "name": try_name, "manifestUri": manifest_uri(manifest), "readersPerImage": 1, "strategy": "random",
            "instructions": "Try the viewer: window/level, zoom, ROIs; mark each finding and submit (Ctrl+Enter)."})
    agreement = admin.call("GET", f"/api/admin/jobs/{job['id']}/agreement")
    readers_stats = admin.call("GET", f"/api/admin/jobs/{job['id']}/readers")
    return {"id": job["id"], "name": name, "try_job": try_name, "simulation": stats, "agreement": agreement,
            "readers": readers_stats["readers"]}


def export_labels(ctx: stack.LocalContext, job: dict[str, Any]) -> dict[str, Any]:
    """Consolidate, export the output manifest + CSV, and write DICOM SR back to Orthanc."""
    step("consolidating, exporting the output manifest and writing DICOM SR to Orthanc")
    admin = LabelingSession(ctx.url("labeling"), ctx.credentials["admin_username"], ctx.credentials["admin_password"])
    result: dict[str, Any] = admin.call("POST", f"/api/admin/jobs/{job['id']}/export", json={"sr": True})
    print(f"    output manifest: {result['manifestUri']}")
    print(f"    CSV:             {result['csvUri']}")
    if result.get("sr"):
        print(f"    DICOM SR:        {result['sr']}")
    return result


def train_config(ctx: stack.LocalContext, options: DemoOptions, export: dict[str, Any], work: Path) -> Any:
    """The demo's training settings: the exported output manifest, images fetched from Orthanc."""
    from dicomlab_core.config import Secret
    from dicomlab_core.orthanc import OrthancSettings
    from dicomlab_training import load_train_config

    # One folder per data set and training settings: a rerun resumes (or reuses) exactly that run.
    out = work / f"model-{options.patients}-{options.size}-{options.seed}-{options.train_size}px-{options.epochs}ep"
    config = load_train_config(overrides={
        "manifest": export["manifestUri"], "out": str(out), "pixels.size": options.train_size,
        "epochs": options.epochs, "seed": options.seed, "cache_dir": str(ctx.run_dir / "training-cache"),
        "num_workers": 0, "batch_size": 16,
        # A from-scratch DenseNet121 on a few hundred images: a higher learning rate and no augmentation
        # (the synthetic patients already vary in size, pose and exposure) learn within a CPU budget.
        "lr": 1e-3, "augment.enabled": False,
        **({"pushgateway_url": ctx.url("pushgateway")} if "pushgateway" in ctx.ports else {}),
    })
    # Connection settings are not hyperparameters: they never go through the recorded overrides.
    return dataclasses.replace(config, orthanc=OrthancSettings(
        url=ctx.orthanc_url, username=ctx.orthanc_username, password=Secret(ctx.orthanc_password)))


def train(config: Any, options: DemoOptions) -> dict[str, Any]:
    """Train DenseNet121 on CPU with ``config`` and evaluate it on the held-out patients."""
    from dicomlab_training import run

    step(f"training DenseNet121 on CPU at {options.train_size}² for {options.epochs} epochs")
    result = run(config)
    return {"out": result.out, "best_model": result.best_model, "last_model": result.last_model,
            "report": result.report, "plots": dict(result.plots), "bundle": result.bundle,
            "per_label_auroc": result.per_label_auroc, "macro_auroc": result.macro_auroc,
            "micro_auroc": result.micro_auroc, "skipped": result.skipped}


def print_summary(summary: dict[str, Any]) -> None:
    step("done")
    training = summary["training"]
    print(f"    images labelled: {summary['images']} ({summary['patients']} patients), "
          f"{summary['export']['images']} in the output manifest")
    agreement = summary["job"]["agreement"].get("findings", {})
    if agreement:
        print("    reader agreement per finding (Fleiss' kappa):")
        for label, values in agreement.items():
            kappa = values.get("fleissKappa")
            print(f"      {label:<28} {'undefined' if kappa is None else f'{kappa:.2f}'}")
    print("    held-out AUROC per finding:")
    for label, auroc in training["per_label_auroc"].items():
        print(f"      {label:<28} {'undefined' if auroc is None else f'{auroc:.3f}'}")
    for name in ("macro_auroc", "micro_auroc"):
        if training.get(name) is not None:
            print(f"    {name.replace('_', ' ').replace('auroc', 'AUROC')}: {training[name]:.3f}")
    print(f"    model:   {training['best_model']}")
    print(f"    bundle:  {training['bundle']}")
    print(f"    report:  {training['report']}")
    for name, uri in training["plots"].items():
        print(f"    plot:    {uri}  ({name})")
    if "labels_comparison" in summary:
        from dicomlab_cli.demo_extras import format_comparison

        for line in format_comparison(summary["labels_comparison"]):
            print(f"    {line}")
        print(f"    comparison: {summary['labels_comparison_file']}")
    if "loop" in summary:
        print(f"    active-learning loop report: {summary['loop']['table']}")
        print(f"    loop plot:   {summary['loop']['plot']}")
    ui = summary["ui"]
    print(f"\n    labeling UI: {ui['url']}  (user '{ui['username']}', password in {ui['password_file']})")
    print(f"    the job '{summary['job']['try_job']}' waits in 'My queue' for you to label; 'Review' shows the "
          "simulated readers' disagreements")
    print("    stop everything with: .venv/bin/dicomlab stack down")

