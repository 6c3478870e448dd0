"""``zerolabel`` whose workers also run the misbehaving functions of :mod:`tests.fault_jobs`.

Workers run only the discovery job; fault tests start this entry point instead of
``zerolabel.cli.main`` so their stand-in jobs are served (``python -m tests.fault_worker worker``).
"""

from __future__ import annotations

from zerolabel.cli.main import main
from zerolabel.queue.worker import ZerolabelWorker

FAULT_FUNCTIONS = frozenset(
    f"tests.fault_jobs.{name}" for name in ("kill_own_worker", "never_succeeds")
)

if __name__ == "__main__":
    ZerolabelWorker.functions = ZerolabelWorker.functions | FAULT_FUNCTIONS
    main()
