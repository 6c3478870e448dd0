"""Interactive prompts: an annotator's clicks, one job each, on a queue workers serve first.

What it adds to RQ: a second queue, ``<ZEROLABEL_QUEUE>-interactive``. Every worker serves it
before its discovery queue (RQ's dequeue takes queues in order), and between two batch steps of a
running pre-labeling job (:meth:`~zerolabel.queue.worker.ZerolabelWorker.serve_prompts`), so a
click waits for at most one batch step. A prompt job is never shared, cached or retried: it
answers one click, and a click not answered while the annotator waits is worth nothing later
(it expires from the queue after :data:`QUEUED_S`).

Nothing of a prompt is kept between requests: Label Studio sends every click on the object so
far with each request (:mod:`zerolabel.labelstudio.interactive`).
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from zerolabel.contract import PromptRequest
from zerolabel.queue.dispatch import PROMPT_FUNCTION, interactive_queue_name
from zerolabel.settings import QueueSettings

logger = logging.getLogger(__name__)

QUEUED_S = 30
"""A prompt job still queued after this long is dropped (the annotator has moved on)."""
KEPT_S = 60
"""How long a prompt's result or failure is kept."""


def make_interactive_queue(redis: Redis, settings: QueueSettings) -> Queue:
    return Queue(interactive_queue_name(settings), connection=redis, serializer=JSONSerializer)


def submit(queue: Queue, request: PromptRequest, job_timeout_s: int) -> Job:
    """Queue one prompt; its job expires unanswered after :data:`QUEUED_S`."""
    return queue.enqueue(
        PROMPT_FUNCTION,
        request.to_dict(),
        job_id=request.job_id,
        description=f"prompt on task {request.request.task_id}",
        job_timeout=job_timeout_s,
        ttl=QUEUED_S,
        result_ttl=KEPT_S,
        failure_ttl=KEPT_S,
    )
