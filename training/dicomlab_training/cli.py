"""``dicomlab train run | evaluate | export | submit``.

Examples::

    dicomlab train run --manifest s3://b/jobs/j1/manifests/output/output.manifest --local-stack \\
        --out runs/j1 --size 224 --epochs 10
    dicomlab train run --manifest out.manifest --dicom-dir ./dicoms --out runs/smoke --size 128 --epochs 2 \\
        --set augment.rotate_degrees=5 --set batch_size=16
    dicomlab train evaluate --model runs/j1/models/best.pt --manifest other.manifest --dicom-dir ./d --out eval/
    dicomlab train submit --image registry/dicomlab-training:0.1.0 --nodes 2 --gpus-per-node 8 \\
        --node-group gpu-a100 --capacity-type spot --dry-run -- --manifest s3://... --out s3://...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from dicomlab_training.config import TrainConfig, load_train_config, parse_assignments


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON training config (every TrainConfig field)")
    parser.add_argument("--manifest", help="output manifest URI (path, file:// or s3://)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--orthanc-url", help="Orthanc URL (credentials from DICOMLAB_TRAIN__ORTHANC__*)")
    source.add_argument("--dicom-dir", help="folder or s3:// prefix of .dcm files instead of Orthanc")
    source.add_argument("--local-stack", action="store_true", help="use the running local stack's Orthanc")
    parser.add_argument("--out", help="output folder or s3:// URL")
    parser.add_argument("--size", type=int, help="training resolution in pixels")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, help="DataLoader workers")
    parser.add_argument("--cache-dir", help="local decode-cache folder")
    parser.add_argument("--labels", help="comma-separated label set (default: from the manifest)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. augment.rotate_degrees=5 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {}
    simple = {"manifest": "manifest", "dicom_dir": "dicom_dir", "out": "out", "size": "pixels.size",
              "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed", "device": "device",
              "workers": "num_workers", "cache_dir": "cache_dir", "labels": "labels"}
    for attr, key in simple.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "no_resume", False):
        overrides["resume"] = False
    overrides.update(parse_assignments(args.set))
    config = load_train_config(json_path=args.config, overrides=overrides)
    if getattr(args, "local_stack", False):
        from dicomlab_training.data import orthanc_settings_from_stack

        config = dataclasses.replace(config, orthanc=orthanc_settings_from_stack())
    elif getattr(args, "orthanc_url", None):
        config = dataclasses.replace(config, orthanc=dataclasses.replace(config.orthanc, url=args.orthanc_url))
    return config


def run_command(args: argparse.Namespace) -> int:
    from dicomlab_core.errors import ConfigError
    from dicomlab_training.loop import Interrupted
    from dicomlab_training.runner import run

    config = config_from_args(args)
    if args.print_config:
        print(json.dumps(config.recorded(), indent=2))
        return 0
    if not config.manifest:
        raise ConfigError("--manifest is required (or set manifest in --config)")
    try:
        result = run(config)
    except Interrupted as exc:
        print(f"dicomlab train run: {exc}; resume by running the same command again", file=sys.stderr)
        return Interrupted.exit_code
    print(json.dumps({"report": result.report, "best_model": result.best_model, "macro_auroc": result.macro_auroc,
                      "per_label_auroc": result.per_label_auroc, "skipped": result.skipped}, indent=2))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from dicomlab_training.offline import evaluate_model

    config = config_from_args(args)
    report = evaluate_model(config, args.model, split=args.split)
    print(json.dumps({k: report[k] for k in ("samples", "macro_auroc", "micro_auroc")}, indent=2))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from dicomlab_training.offline import export_model

    config = config_from_args(args)
    print(export_model(config, args.model))
    return 0


def submit_command(args: argparse.Namespace) -> int:
    from dicomlab_training.launch import build_training_job, spec_from, submit, to_yaml

    overrides: dict[str, Any] = {"train_args": tuple(a for a in args.train_args if a != "--")}
    for name in ("name", "namespace", "image", "nodes", "gpus_per_node", "cpu", "memory", "shm_size",
                 "service_account", "node_group", "karpenter_nodepool", "capacity_type", "backoff_limit",
                 "config_map", "orthanc_secret", "orthanc_url", "pushgateway_url"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    manifests = build_training_job(spec_from(overrides))
    if args.dry_run:
        print(to_yaml(manifests), end="")
        return 0
    for created in submit(manifests):
        print(f"created {created}")
    return 0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("train", help="train, evaluate, export, submit models")
    actions = parser.add_subparsers(dest="action", required=True)
    run_parser = actions.add_parser("run", help="train a model from an output manifest")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=run_command)

    evaluate = actions.add_parser("evaluate", help="evaluate a model file on a manifest")
    add_run_arguments(evaluate)
    evaluate.add_argument("--model", required=True, help="model state dict (models/best.pt) path or URI")
    evaluate.add_argument("--split", choices=["all", "train", "val", "test"], default="all")
    evaluate.set_defaults(func=evaluate_command)

    export = actions.add_parser("export", help="export a model file as TorchScript + ONNX bundle")
    add_run_arguments(export)
    export.add_argument("--model", required=True, help="model state dict path or URI")
    export.set_defaults(func=export_command)

    from dicomlab_training.active_cli import register_loop
    from dicomlab_training.predict_cli import register_predict

    register_predict(actions, add_run_arguments)
    register_loop(subparsers, add_run_arguments)

    sub = actions.add_parser("submit", help="run training as a Kubernetes Job (--dry-run prints YAML)")
    sub.add_argument("--dry-run", action="store_true")
    sub.add_argument("--name")
    sub.add_argument("--namespace")
    sub.add_argument("--image")
    sub.add_argument("--nodes", type=int)
    sub.add_argument("--gpus-per-node", type=int)
    sub.add_argument("--cpu")
    sub.add_argument("--memory")
    sub.add_argument("--shm-size")
    sub.add_argument("--service-account")
    sub.add_argument("--node-group", help="EKS managed node group")
    sub.add_argument("--karpenter-nodepool")
    sub.add_argument("--capacity-type", choices=["spot", "on-demand"])
    sub.add_argument("--backoff-limit", type=int)
    sub.add_argument("--config-map", help="ConfigMap holding train.json")
    sub.add_argument("--orthanc-secret", help="Secret with username/password keys")
    sub.add_argument("--orthanc-url")
    sub.add_argument("--pushgateway-url")
    sub.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of `train run`")
    sub.set_defaults(func=submit_command)
