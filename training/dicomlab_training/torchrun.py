"""``python -m dicomlab_training.torchrun ...``: torchrun whose exit code says "preempted".

torchrun handles SIGTERM by forwarding it to its workers, waiting for them (30 s) and then dying with
a traceback and exit code 1, so a Job or JobSet cannot tell a preemption from a crash. The workers
themselves checkpoint on SIGTERM and exit with :data:`~dicomlab_training.config.PREEMPTED_EXIT_CODE`.
This wrapper runs torchrun unchanged (same arguments) and exits with that code when

- torchrun itself was signalled (SIGTERM from the kubelet or a process-group kill): 128 + signal, i.e.
  143 for SIGTERM; or
- every failed worker exited with the preempted code (a SIGTERM that reached only the workers).

Everything else keeps torchrun's own exit code.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from dicomlab_training.config import PREEMPTED_EXIT_CODE


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(list(sys.argv[1:] if argv is None else argv))
    except SignalException as exc:
        code = 128 + int(exc.sigval)
        print(f"torchrun: stopped by {signal.Signals(exc.sigval).name}; workers checkpointed; exit {code}",
              file=sys.stderr)
        return code
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        if codes == {PREEMPTED_EXIT_CODE}:
            print(f"torchrun: workers preempted (exit {PREEMPTED_EXIT_CODE}); they checkpointed", file=sys.stderr)
            return PREEMPTED_EXIT_CODE
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
