"""``dicomlab``: one command line for the local stack, synthetic data, manifests, labeling and training.

Each package contributes its sub-commands through a ``cli`` module exposing
``register(subparsers)``; packages that are not installed are skipped, so the CLI grows as the
services land. Every sub-command sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from dicomlab_core.errors import ConfigError, ServiceError
from dicomlab_core.logging import configure_logging

logger = logging.getLogger(__name__)

COMMAND_MODULES = (
    "dicomlab_cli.stack_cli",
    "dicomlab_core.synth.cli",
    "dicomlab_manifest.cli",
    "dicomlab_labeling.cli",
    "dicomlab_training.cli",
    "dicomlab_cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomlab", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--log-level", default="WARNING", help="log level for JSON logs on stdout")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
            module.register(subparsers)
        except ModuleNotFoundError as exc:
            # A package that is not installed, or a command whose third-party dependencies are not: each
            # image installs only its own extra (the training image has no labeling UI dependencies).
            if exc.name and (name.startswith(exc.name) or not exc.name.startswith("dicomlab_")):
                logger.debug("command module %s left out: %s is not installed", name, exc.name)
                continue
            raise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, service="cli")
    from dicomlab_cli.processes import StackError

    try:
        code: int = args.func(args)
    except (StackError, ConfigError, ServiceError) as exc:
        message = exc.description if isinstance(exc, ServiceError) else str(exc)
        print(f"dicomlab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
