"""``dicomlab``: one command line for the local stack, synthetic data, manifests, labeling and training.

Each package contributes its sub-commands through a ``cli`` module exposing
``register(subparsers)``, imported statically here (the CLI is the top layer: it may import every
package, and none imports it). Every sub-command sets ``func(args) -> int``; a sub-command that falls
back on the running local stack finds :func:`dicomlab_cli.stack.running_env` on its arguments
(:mod:`dicomlab_core.localenv`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from dicomlab_cli import demo, loop_cli, stack, stack_cli
from dicomlab_cli.processes import StackError
from dicomlab_core import localenv
from dicomlab_core.errors import ConfigError, ServiceError
from dicomlab_core.logging import configure_logging
from dicomlab_core.synth import cli as synth_cli
from dicomlab_labeling import cli as labeling_cli
from dicomlab_manifest import cli as manifest_cli
from dicomlab_training import cli as training_cli

logger = logging.getLogger(__name__)

COMMAND_MODULES: tuple[ModuleType, ...] = (stack_cli, synth_cli, manifest_cli, labeling_cli, training_cli, loop_cli,
                                          demo)
"""The modules whose ``register(subparsers)`` adds the sub-commands, in help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomlab", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--log-level", default="WARNING", help="log level for JSON logs on stdout")
    parser.set_defaults(**{localenv.ARG: stack.running_env})
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, service="cli")
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
