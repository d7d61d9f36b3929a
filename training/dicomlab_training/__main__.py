"""``python -m dicomlab_training run ...`` — the entry point torchrun and the Kubernetes Job use.

It is ``dicomlab train ...`` with INFO logging (JSON lines on stdout) unless DICOMLAB_LOG_LEVEL says otherwise.
"""

from __future__ import annotations

import os
import sys

from dicomlab_cli.main import main

if __name__ == "__main__":
    sys.exit(main(["--log-level", os.environ.get("DICOMLAB_LOG_LEVEL", "INFO"), "train", *sys.argv[1:]]))
