"""``python -m dicomlab_training run ...`` — the entry point torchrun and the Kubernetes Job use.

It is ``dicomlab train ...`` with INFO logging (JSON lines on stdout) unless DICOMLAB_LOG_LEVEL says
otherwise, built from :func:`dicomlab_training.cli.register` alone: training runs without the
``dicomlab`` CLI (the layer above it). The local stack is the CLI's: ``--local-stack`` needs
``dicomlab train run --local-stack``; here Orthanc comes from ``DICOMLAB_TRAIN__ORTHANC__*`` or ``--orthanc-url``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dicomlab_core.errors import ConfigError, ServiceError
from dicomlab_core.logging import configure_logging
from dicomlab_training.cli import register


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``train`` action; configuration errors print one line and exit 2, like ``dicomlab``."""
    parser = argparse.ArgumentParser(prog="python -m dicomlab_training")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    configure_logging(os.environ.get("DICOMLAB_LOG_LEVEL", "INFO"), service="cli")
    try:
        code: int = args.func(args)
    except (ConfigError, ServiceError) as exc:
        message = exc.description if isinstance(exc, ServiceError) else str(exc)
        print(f"dicomlab train: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
