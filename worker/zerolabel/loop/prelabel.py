"""Pre-label a whole Label Studio project through the queue: ``zerolabel prelabel``.

One run reads the project's labeling config and its ML backend connections' extra params
(:mod:`zerolabel.loop.backend_options`), plans the spec exactly as ``/predict`` does (so both
write the same ``model_version``), lists every task, skips those that already carry a
prediction of that version, and sends the rest to the workers in batches. Each finished task
gets one prediction, stored with ``POST /api/predictions`` as soon as its batch is collected.
The project's ``model_version`` is then set to that version, which fills the Data Manager's
"Prediction score" column (:mod:`zerolabel.loop.project_version`).
Nothing is queued when no worker is alive (the run says so at once), and a run whose workers all
stop while it waits for a batch ends early instead of waiting out ``wait_timeout_s``.

Re-running is how an interrupted or partly failed run is finished: tasks that got their
prediction now carry the version and are skipped; the others are queued again, and jobs still
running or finished since are picked up (the job id depends only on the image, the Label
Studio URL it is relative to, and the spec). A task's prediction is stored at most once per
version unless two runs work on one project at the same time.

The client's token stays in this process: requests carry no credentials, and workers download
task images with their own ``LABEL_STUDIO_API_KEY`` from the Label Studio they are configured for
(``worker_ls_url`` must be its ``LABEL_STUDIO_URL`` or one of its aliases).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError
from rq.job import Job

from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.errors import DiscoveryError, LabelStudioError
from zerolabel.labelstudio import tasks as ls_format
from zerolabel.labelstudio.client import LabelStudioClient
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.loop.backend_options import choose_options, explain_options
from zerolabel.loop.prelabel_report import PrelabelReport
from zerolabel.loop.project_version import use_model_version
from zerolabel.loop.waiting import BatchWaiter
from zerolabel.progress import Progress, track
from zerolabel.queue.dispatch import Outcome
from zerolabel.queue.service import PredictionService
from zerolabel.sites import without_user_info

logger = logging.getLogger(__name__)

DEFAULT_WAIT_TIMEOUT_S = 600.0
"""How long one batch's jobs are waited for before the late ones are left to the next run."""


def prelabel_project(
    client: LabelStudioClient,
    project_id: int,
    service: PredictionService,
    *,
    options: ProjectOptions | None = None,
    batch_size: int = 16,
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    max_tasks: int | None = None,
    worker_ls_url: str | None = None,
    progress: bool = True,
) -> PrelabelReport:
    """Write one prediction of the current model version to every task that lacks one.

    Args:
        client: Label Studio client (its token is used here only, never sent to workers).
        project_id: the project to pre-label.
        service: the backend's service: plans the spec and holds the queue's dispatcher.
        options: the project's options, as given to the ML backend as extra params; the same
            options give the same ``model_version`` as ``/predict``. None: those of the
            project's ML backend connection; given, they must give its ``model_version``.
        batch_size: tasks queued together; the next batch is queued before this one is
            collected, so workers stay busy while predictions are stored.
        wait_timeout_s: how long one batch is waited for; late tasks are reported.
        max_tasks: attempt at most this many tasks in this run (None: all).
        worker_ls_url: Label Studio URL as workers reach it, for ``/data/...`` image URLs:
            their ``LABEL_STUDIO_URL`` or one of their ``ZEROLABEL_LABEL_STUDIO_ALIASES``
            (workers refuse others per task); None takes ``client.url``.
        progress: show progress on stderr: a bar on a terminal, else a log line every few
            seconds with the rate per finished task and the ETA (:mod:`zerolabel.progress`).

    Returns:
        The report; ``report.failed`` lists the tasks left for the next run.

    Raises:
        LabelStudioError: Label Studio could not be read, or refused the credentials.
        ConfigError: the labeling config or the options cannot be served, or the options
            would write another ``model_version`` than the project's ML backend connection.
        DiscoveryError: Redis could not be reached, or no worker is alive (before anything is
            queued, or when every worker stopped while a batch was waited for).
        KeyboardInterrupt: passed on after logging what was done; run again to continue.
    """
    if batch_size < 1 or (max_tasks is not None and max_tasks < 0):
        raise ValueError(f"need batch_size >= 1 and max_tasks >= 0, got {batch_size}, {max_tasks}")
    config = client.label_config(project_id)
    chosen = choose_options(
        client, project_id, options, lambda given: service.model_version(config, given)
    )
    target, spec = service.plan(config, chosen.options)
    explain_options(project_id, chosen, spec, service.settings.discovery)
    run = _Run(
        client, service, target, spec, worker_ls_url or client.url, wait_timeout_s, project_id
    )
    listing = f"reading project {project_id}"
    pending = run.scan(track(client.tasks(project_id), listing, unit="task", enabled=progress))
    if max_tasks is not None and len(pending) > max_tasks:
        run.report.deferred = len(pending) - max_tasks
        pending = pending[:max_tasks]
    logger.info(
        "project %s: %d task(s), %d already pre-labeled with %s, %d to do",
        project_id,
        run.report.total,
        run.report.skipped_existing,
        run.version,
        len(pending),
    )
    if pending:
        run.waiter.require_workers(len(pending))
    failed_before = len(run.report.failed)
    try:
        with Progress("pre-labeling", len(pending), unit="task", enabled=progress) as counter:
            run.process(pending, batch_size, counter.advance)
    except KeyboardInterrupt:
        done = run.report.written + len(run.report.failed) - failed_before
        run.report.interrupted = len(pending) - done
        logger.warning(
            "interrupted with %d task(s) not done; run again to continue. So far: %s",
            run.report.interrupted,
            run.report.summary(),
        )
        raise
    if run.report.written or run.report.skipped_existing:
        use_model_version(client, project_id, run.version)
    return run.report


@dataclass(frozen=True)
class _Pending:
    task_id: int
    image: str


class _Run:
    """State of one pre-labeling run."""

    def __init__(
        self,
        client: LabelStudioClient,
        service: PredictionService,
        target: ls_format.Target,
        spec: DiscoverySpec,
        worker_ls_url: str,
        wait_timeout_s: float,
        project_id: int,
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.service = service
        self.target = target
        self.spec = spec
        self.version = spec.model_version()
        self.worker_ls_url = worker_ls_url
        self.waiter = BatchWaiter(service, wait_timeout_s)
        self.report = PrelabelReport(model_version=self.version)

    def scan(self, tasks: Iterable[dict[str, Any]]) -> list[_Pending]:
        """Count every task; the ones still to do, in id order."""
        pending: list[_Pending] = []
        for task in tasks:
            self.report.total += 1
            task_id = int(task["id"])
            if self.version in _model_versions(task):
                self.report.skipped_existing += 1
                continue
            image = (task.get("data") or {}).get(self.target.data_key)
            if isinstance(image, str) and image:
                pending.append(_Pending(task_id, image))
            else:
                reason = f"task data has no '{self.target.data_key}' image URL"
                self.report.failed.append((task_id, reason))
        return pending

    def process(
        self, pending: Sequence[_Pending], batch_size: int, advance: Callable[[int], object]
    ) -> None:
        """Queue batch by batch, one batch ahead, and store each batch's predictions."""
        in_flight: deque[tuple[list[_Pending], list[Job]]] = deque()
        for start in range(0, len(pending), batch_size):
            batch = list(pending[start : start + batch_size])
            in_flight.append((batch, self._submit(batch)))
            if len(in_flight) > 1:
                self._finish(*in_flight.popleft(), advance)
        while in_flight:
            self._finish(*in_flight.popleft(), advance)

    def _submit(self, batch: list[_Pending]) -> list[Job]:
        requests = [
            DiscoveryRequest(self.spec, p.image, p.task_id, self.worker_ls_url) for p in batch
        ]
        try:
            return [self.service.dispatcher.submit(request) for request in requests]
        except (RedisError, OSError) as exc:
            raise DiscoveryError(f"Redis unreachable at {self._redis_url()}: {exc}") from None

    def _finish(
        self, batch: list[_Pending], jobs: list[Job], advance: Callable[[int], object]
    ) -> None:
        try:
            outcomes, gone = self.waiter.collect(jobs)
        except (RedisError, OSError) as exc:
            raise DiscoveryError(f"Redis unreachable at {self._redis_url()}: {exc}") from None
        for pending, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:  # its worker is gone: left to the next run
                continue
            reason = self._store(pending.task_id, outcome)
            if reason is not None:
                self.report.failed.append((pending.task_id, reason))
                logger.warning("task %s: no prediction: %s", pending.task_id, reason)
            advance(1)
        if gone:
            waiting = outcomes.count(None)
            raise self.waiter.no_workers(
                f"every worker stopped while {waiting} task(s) waited "
                f"({self.report.written} prediction(s) written so far)"
            )

    def _store(self, task_id: int, outcome: Outcome) -> str | None:
        """Store the task's prediction; the reason when there is none."""
        result = outcome.result
        if result is None:
            return outcome.reason or "no result"
        if result.error:
            return result.error
        try:
            entry = ls_format.prediction(replace(result, model_version=self.version), self.target)
        except ValueError as exc:
            return f"could not render the regions: {exc}"
        try:
            self.client.create_prediction(
                task_id,
                entry["result"],
                entry["score"],
                entry["model_version"],
                project=self.project_id,
            )
        except KeyboardInterrupt:
            if self._stored(task_id):  # Ctrl-C came after Label Studio stored it
                self.report.written += 1
            raise
        except LabelStudioError as exc:
            if exc.status in (401, 403):
                raise
            if (exc.status is None or exc.status >= 500) and self._stored(task_id):
                self.report.written += 1  # stored, though the reply was lost
                return None
            return str(exc)
        self.report.written += 1
        return None

    def _stored(self, task_id: int) -> bool:
        """Whether the task has a prediction of this version (after a failed POST)."""
        try:
            predictions = self.client.predictions(task_id=task_id)
        except LabelStudioError:
            return False
        return any(p.get("model_version") == self.version for p in predictions)

    def _redis_url(self) -> str:
        return without_user_info(self.service.settings.discovery.queue.redis_url)  # no password


def _model_versions(task: dict[str, Any]) -> set[str]:
    """Versions of the task's predictions (``predictions`` list, else the data manager column)."""
    predictions = task.get("predictions")
    if isinstance(predictions, list):
        return {str(p.get("model_version")) for p in predictions if isinstance(p, dict)}
    column = task.get("predictions_model_versions") or ""
    return {v.strip() for v in str(column).split(",") if v.strip()}
