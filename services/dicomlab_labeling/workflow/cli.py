"""``dicomlab labeling db|user|job|simulate``: self-hosted labeling from the command line.

Every command reads the service configuration from the environment (``DICOMLAB_LABELING__*``), so it
acts on the same database and object store as the running service::

    dicomlab labeling db upgrade
    dicomlab labeling user add --username ann --role annotator      (password from $DICOMLAB_PASSWORD or a prompt)
    dicomlab labeling job create --name batch-1 --manifest manifests/input.manifest --readers 3
    dicomlab labeling job export --name batch-1 --sr
    dicomlab labeling simulate --url http://127.0.0.1:8083 --job-id 1 --truth truth.json \\
        --reader ann:PASSWORD:0.95 --reader bob:PASSWORD:0.9 --reader eve:PASSWORD:0.6
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select


def register_selfhosted(commands: Any) -> None:
    db = commands.add_parser("db", help="the self-hosted labeling database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(func=_db_upgrade)
    db_commands.add_parser("current", help="print the schema revision").set_defaults(func=_db_current)

    user = commands.add_parser("user", help="self-hosted labeling accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", help="create an account (password from $DICOMLAB_PASSWORD or a prompt)")
    add.add_argument("--username", required=True)
    add.add_argument("--role", default="annotator", choices=["annotator", "reviewer", "admin"])
    add.add_argument("--email", default="")
    add.add_argument("--sso-only", action="store_true", help="no password: signs in through the SSO proxy only")
    add.set_defaults(func=_user_add)

    job = commands.add_parser("job", help="self-hosted labeling jobs")
    job_commands = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    create = job_commands.add_parser("create", help="create a job from an input manifest in the object store")
    create.add_argument("--name", required=True)
    create.add_argument("--manifest", required=True, help="manifest URI (s3://, file://) or key in the store")
    create.add_argument("--readers", type=int, default=None, help="distinct readers per image (default 3)")
    create.add_argument("--labels", help="comma-separated label set (default: the manifest's)")
    create.add_argument("--instructions", default="")
    create.add_argument("--due", help="due date (ISO 8601)")
    create.add_argument("--strategy", default="fewest-answers-first",
                        choices=["in-order", "random", "fewest-answers-first", "uncertainty-first"])
    create.add_argument("--lease-seconds", type=int, default=None)
    create.add_argument("--allow-patient-identifiers", action="store_true")
    create.add_argument("--gold", help="gold-standard images with known answers (JSON lines; see gold.py): "
                                       "URI or key in the store")
    create.add_argument("--ai-assistance", default="off", choices=["off", "after-first-answer", "always"],
                        help="when readers see the model's predictions (the manifest's model-predictions)")
    create.set_defaults(func=_job_create)
    export = job_commands.add_parser("export", help="write the output manifest + CSV (and SRs with --sr)")
    export.add_argument("--name", required=True)
    export.add_argument("--sr", action="store_true", help="also write DICOM SR back to Orthanc")
    export.set_defaults(func=_job_export)

    sim = commands.add_parser("simulate", help="simulated readers labeling a job through the HTTP API")
    sim.add_argument("--url", required=True, help="labeling service base URL")
    sim.add_argument("--job-id", type=int, required=True)
    sim.add_argument("--truth", required=True, type=Path,
                     help="JSON: a list of records with sop_uid and findings, or {sop_uid: findings}")
    sim.add_argument("--reader", action="append", required=True, metavar="USER:PASSWORD:ACCURACY")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_simulate)


def _database(*, signing_key: bool = True) -> Any:
    """The configuration and database. ``signing_key=False`` (``user add``, ``job create``): those
    commands sign no image token, so an unset ``DICOMLAB_LABELING__TOKEN_KEYS`` is filled with a
    throwaway key that is never used instead of being refused."""
    import secrets

    from dicomlab_core.config import load_config
    from dicomlab_labeling.config import ENV_PREFIX, LabelingConfig
    from dicomlab_labeling.workflow.auth import set_password_cost
    from dicomlab_labeling.workflow.db import Database

    environ = dict(os.environ)
    if not signing_key and not environ.get(f"{ENV_PREFIX}__TOKEN_KEYS"):
        environ[f"{ENV_PREFIX}__TOKEN_KEYS"] = f"unused:{secrets.token_urlsafe(32)}"
    config = load_config(LabelingConfig, ENV_PREFIX, environ)
    set_password_cost(time_cost=config.auth.password_time_cost, memory_kib=config.auth.password_memory_kib)
    return config, Database(config.sqlalchemy_url)


def _db_upgrade(args: argparse.Namespace) -> int:
    from dicomlab_labeling.workflow.migrate import upgrade

    _, db = _database()
    print(upgrade(db))
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from dicomlab_labeling.workflow.migrate import current_revision

    _, db = _database()
    print(current_revision(db) or "(empty)")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    from dicomlab_labeling.workflow.auth import create_user
    from dicomlab_labeling.workflow.migrate import upgrade

    password = None
    if not args.sso_only:
        password = os.environ.get("DICOMLAB_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    _, db = _database(signing_key=False)
    upgrade(db)
    with db.session() as session:
        user = create_user(session, args.username, password=password, role=args.role, email=args.email)
        print(json.dumps({"id": user.id, "username": user.username, "role": user.role}))
    return 0


def _job_create(args: argparse.Namespace) -> int:
    from dicomlab_core.objectstore import open_store
    from dicomlab_core.orthanc import OrthancClient
    from dicomlab_labeling.workflow.jobs import create_job, job_json, parse_time
    from dicomlab_labeling.workflow.migrate import upgrade

    config, db = _database(signing_key=False)
    upgrade(db)
    with db.session() as session:
        job = create_job(session, name=args.name, manifest_uri=args.manifest, store=open_store(config.store_url),
                         scope=config.read_scope(), orthanc=OrthancClient(config.orthanc),
                         default_labels=config.labels, labels=args.labels,
                         readers_per_image=args.readers or config.queue.readers_per_image,
                         instructions=args.instructions, due_date=parse_time(args.due, "--due"),
                         allow_patient_identifiers=args.allow_patient_identifiers, strategy=args.strategy,
                         lease_seconds=args.lease_seconds or config.queue.lease_seconds, gold_uri=args.gold,
                         ai_assistance=args.ai_assistance)
        print(json.dumps(job_json(session, job)))
    return 0


def _job_export(args: argparse.Namespace) -> int:
    from dicomlab_core.errors import NotFound
    from dicomlab_core.objectstore import open_store
    from dicomlab_core.orthanc import OrthancClient
    from dicomlab_labeling.workflow.export import export_job
    from dicomlab_labeling.workflow.models import Job

    config, db = _database()
    with db.session() as session:
        job = session.scalar(select(Job).where(Job.name == args.name))
        if job is None:
            raise NotFound(f"no job named {args.name!r}")
        outcome = export_job(session, job, store=open_store(config.store_url), settings=config.consolidation,
                             orthanc=OrthancClient(config.orthanc), sr=args.sr)
    print(json.dumps(outcome))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from dicomlab_labeling.workflow.simulate import simulate_readers

    raw = json.loads(args.truth.read_text())
    truth = {r["sop_uid"]: r["findings"] for r in raw} if isinstance(raw, list) else raw
    readers = []
    for entry in args.reader:
        user, _, rest = entry.partition(":")
        password, _, accuracy = rest.rpartition(":")
        readers.append((user, password, float(accuracy)))
    outcomes = simulate_readers(args.url, args.job_id, readers, truth, seed=args.seed)
    print(json.dumps([{"reader": o.username, "submitted": o.submitted, "skipped": o.skipped, "errors": o.errors}
                      for o in outcomes]))
    return 1 if any(o.errors for o in outcomes) else 0
