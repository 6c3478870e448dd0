"""How a batched job's outcome reaches RQ: the job's own run answers with it.

A batch computes every job's outcome first (:mod:`zerolabel.queue.batch`); then each job goes
through RQ's ``perform_job`` while :func:`answering` holds its outcome, and
``zerolabel.queue.jobs.discover`` returns (or raises) what :func:`answer_for` gives it instead of
running discovery again. The outcome is kept in a context variable, so it is seen only by the
run of that job, in that thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from zerolabel.contract import DiscoveryResult


@dataclass(frozen=True)
class Answer:
    """The outcome computed for one batched job: what its run through RQ returns or raises."""

    job_id: str
    result: DiscoveryResult | None = None
    error: Exception | None = None

    def unwrap(self) -> DiscoveryResult:
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise ValueError(f"job {self.job_id}: an answer holds a result or an error")
        return self.result


_ANSWER: ContextVar[Answer | None] = ContextVar("zerolabel_batch_answer", default=None)


def answer_for(job_id: str) -> Answer | None:
    """The outcome the batch computed for ``job_id``, while RQ runs that job; else None."""
    answer = _ANSWER.get()
    return answer if answer is not None and answer.job_id == job_id else None


@contextlib.contextmanager
def answering(answer: Answer) -> Iterator[None]:
    """While the block runs, :func:`answer_for` gives ``answer`` to its job."""
    token = _ANSWER.set(answer)
    try:
        yield
    finally:
        _ANSWER.reset(token)
