"""``dicomlab stack up | down | status``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dicomlab_cli import stack


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("stack", help="run the local stack (Orthanc + services)")
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start Orthanc and the services on loopback (idempotent)")
    up.add_argument("--postgres", action="store_true", help="use a PostgreSQL index for Orthanc")
    up.add_argument("--monitoring", action="store_true", help="also start Prometheus and a Pushgateway")
    up.set_defaults(func=_up)
    actions.add_parser("down", help="stop everything").set_defaults(func=_down)
    st = actions.add_parser("status", help="what runs where")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)


def _print_status(result: dict[str, Any]) -> None:
    directory = stack.run_dir()
    if not result:
        print("the local stack is not running (start it with `dicomlab stack up`)")
        return
    for name, item in result.items():
        print(f"  {name:<12} {item['health']:<10} http://127.0.0.1:{item['port']}  (pid {item['pid']})")
    print(f"  logs and credentials: {directory} (credentials.json is readable by you only)")


def _up(args: argparse.Namespace) -> int:
    result = stack.up(postgres=args.postgres, monitoring=args.monitoring)
    _print_status(result)
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stack.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _status(args: argparse.Namespace) -> int:
    result = stack.status()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_status(result)
    return 0 if result and all(item["health"] == "up" for item in result.values()) else 1
