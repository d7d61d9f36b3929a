"""``dicomlab train run | evaluate | export | submit``.

Examples::

    dicomlab train run --manifest s3://b/jobs/j1/manifests/output/output.manifest --local-stack \\
        --out runs/j1 --size 224 --epochs 10
    dicomlab train run --manifest out.manifest --dicom-dir ./dicoms --out runs/smoke --size 128 --epochs 2 \\
        --set augment.rotate_degrees=5 --set batch_size=16
    dicomlab train evaluate --model runs/j1/models/best.pt --manifest other.manifest --dicom-dir ./d --out eval/
    dicomlab train submit --nodes 2 --gpus-per-node 8 \\
        --karpenter-nodepool gpu --capacity-type spot --dry-run -- --manifest s3://... --out s3://...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from dicomlab_core.config import load_config
from dicomlab_core.localenv import local_env
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_training.config import ENV_PREFIX, TrainConfig, load_train_config, parse_assignments


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON training config (every TrainConfig field)")
    parser.add_argument("--manifest", help="output manifest URI (path, file:// or s3://)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--orthanc-url", help="Orthanc URL (credentials from DICOMLAB_TRAIN__ORTHANC__*)")
    source.add_argument("--dicom-dir", help="folder or s3:// prefix of .dcm files instead of Orthanc")
    source.add_argument("--local-stack", action="store_true", help="use the running local stack's Orthanc")
    parser.add_argument("--out", help="output folder or s3:// URL (checkpoints, models, report)")
    parser.add_argument("--size", type=int, help="training resolution in pixels (default 224)")
    parser.add_argument("--epochs", type=int, help="passes over the training split (default 10)")
    parser.add_argument("--batch-size", type=int, help="global batch size, over all ranks (default 32)")
    parser.add_argument("--lr", type=float, help="peak AdamW learning rate (default 3e-4)")
    parser.add_argument("--seed", type=int, help="seed for split, batch order, augmentation and weights")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default auto)")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes (default 2)")
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
        orthanc = load_config(OrthancSettings, f"{ENV_PREFIX}__ORTHANC", local_env(args, "train"))
        config = dataclasses.replace(config, orthanc=orthanc)
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
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under torchrun the checkpoint is written and every rank stopped at the same step: leave now,
            # without the interpreter's teardown of the process group's threads (see runner.run).
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(Interrupted.exit_code)
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


SUBMIT_OPTIONS = ("mode", "name", "namespace", "image", "nodes", "gpus_per_node", "cpu", "memory", "shm_size",
                  "service_account", "node_group", "karpenter_nodepool", "capacity_type", "backoff_limit",
                  "config_map", "orthanc_secret", "orthanc_username_key", "orthanc_password_key", "orthanc_url",
                  "pushgateway_url")
"""``train submit`` options that map one to one onto :class:`~dicomlab_training.launch.JobSpec` fields."""


def submit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The JobSpec overrides given on a ``train submit`` command line (unset options keep the defaults)."""
    overrides: dict[str, Any] = {"train_args": tuple(a for a in args.train_args if a != "--")}
    for name in SUBMIT_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.allow_disruption:
        overrides["do_not_disrupt"] = False
    return overrides


def submit_command(args: argparse.Namespace) -> int:
    from dicomlab_core.errors import ConfigError
    from dicomlab_training.launch import build_training_job, spec_from, submit, to_yaml

    try:
        manifests = build_training_job(spec_from(submit_overrides(args)))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.dry_run:
        print(to_yaml(manifests), end="")
        return 0
    for created in submit(manifests):
        print(f"created {created}")
    return 0


def add_submit_arguments(sub: argparse.ArgumentParser) -> None:
    """``train submit`` options; defaults (job-defaults.json) point at the chart's release ``dicomlab``."""
    from dicomlab_training.launch import load_defaults

    d = load_defaults()
    sub.add_argument("--dry-run", action="store_true", help="print the manifests as YAML instead of creating them")
    sub.add_argument("--mode", choices=["train", "predict"],
                     help="train (`train run`, default) or predict (`train predict`: batch inference, one pod)")
    sub.add_argument("--name", help=f"Job/JobSet name, also the run's instance label (default {d['name']})")
    sub.add_argument("--namespace", help=f"namespace of the chart's release (default {d['namespace']})")
    sub.add_argument("--image", help=f"training image (default the chart's: {d['image']})")
    sub.add_argument("--nodes", type=int,
                     help="nodes; more than 1 renders a JobSet (needs the JobSet controller) (default 1)")
    sub.add_argument("--gpus-per-node", type=int, help="nvidia.com/gpu per pod; 0 trains on CPU (default 1)")
    sub.add_argument("--cpu", help=f"CPU request per pod (default {d['cpu']})")
    sub.add_argument("--memory", help=f"memory request and limit per pod (default {d['memory']})")
    sub.add_argument("--shm-size", help=f"size of the memory-backed /dev/shm (default {d['shm_size']})")
    sub.add_argument("--service-account",
                     help=f"ServiceAccount with S3 access via IRSA / Pod Identity (default {d['service_account']})")
    sub.add_argument("--node-group", help="EKS managed node group (eks.amazonaws.com/nodegroup)")
    sub.add_argument("--karpenter-nodepool", help="Karpenter NodePool (karpenter.sh/nodepool)")
    sub.add_argument("--capacity-type", choices=["spot", "on-demand"], help="capacity type (default either)")
    sub.add_argument("--backoff-limit", type=int,
                     help="retries for real failures: Job backoffLimit, JobSet maxRestarts; disruptions and "
                          f"preempted exits do not count (default {d['backoff_limit']})")
    sub.add_argument("--config-map", help="ConfigMap holding train.json (mounted at /config, passed as --config)")
    sub.add_argument("--orthanc-secret", help=f"Secret with the Orthanc credentials (default {d['orthanc_secret']})")
    sub.add_argument("--orthanc-username-key",
                     help=f"key of the user name in that Secret (default {d['orthanc_username_key']})")
    sub.add_argument("--orthanc-password-key",
                     help=f"key of the password in that Secret (default {d['orthanc_password_key']})")
    sub.add_argument("--orthanc-url", help=f"Orthanc URL inside the cluster (default {d['orthanc_url']})")
    sub.add_argument("--pushgateway-url", help="Prometheus Pushgateway URL for training metrics (default none)")
    sub.add_argument("--allow-disruption", action="store_true",
                     help="do not annotate pods karpenter.sh/do-not-disrupt")
    sub.add_argument("train_args", nargs=argparse.REMAINDER,
                     help="-- then the arguments of `train run` (`train predict` with --mode predict)")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("train", help="train, evaluate, export, submit models")
    actions = parser.add_subparsers(dest="action", required=True)
    run_parser = actions.add_parser("run", help="train a model from an output manifest")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=run_command)

    evaluate = actions.add_parser("evaluate", help="evaluate a model file on a manifest")
    add_run_arguments(evaluate)
    evaluate.add_argument("--model", required=True, help="model state dict (models/best.pt) path or URI")
    evaluate.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                          help="which part of the patient split to evaluate (default all)")
    evaluate.set_defaults(func=evaluate_command)

    export = actions.add_parser("export", help="export a model file as TorchScript + ONNX bundle")
    add_run_arguments(export)
    export.add_argument("--model", required=True, help="model state dict path or URI")
    export.set_defaults(func=export_command)

    from dicomlab_training.predict_cli import register_predict

    register_predict(actions, add_run_arguments)

    sub = actions.add_parser("submit", help="run training on Kubernetes: a Job, or a JobSet for --nodes > 1 "
                                            "(--dry-run prints YAML)")
    add_submit_arguments(sub)
    sub.set_defaults(func=submit_command)
