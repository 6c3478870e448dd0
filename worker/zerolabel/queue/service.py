"""Label Studio tasks -> queued discovery jobs -> one Label Studio entry per task.

What it adds to RQ: nothing of RQ's own kind; it turns a ``/predict`` call into requests for the
dispatcher (:mod:`zerolabel.queue.dispatch`) and their outcomes into Label Studio's entries.

A task without a prediction now (its job is late, failed, or the task is malformed) gets an
empty list: Label Studio 1.23 reads an entry as the task's list of predictions, so it stores
nothing for it and logs no error. A late task of a project whose ``/setup`` named the
configured Label Studio is recorded as waiting for its job (:mod:`zerolabel.queue.writeback`):
the worker that finishes the job writes the prediction to the task through the Label Studio
API, exactly once, and the user does not have to ask again.

Nothing here carries a Label Studio token: requests name the configured Label Studio a relative
image URL belongs to, and workers download (and write late predictions) with their own
``LABEL_STUDIO_API_KEY``. The hostname Label Studio sends to ``/setup`` is accepted only when it
is ``LABEL_STUDIO_URL`` or one of ``ZEROLABEL_LABEL_STUDIO_ALIASES``
(:meth:`PredictionService.context`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from zerolabel import methods
from zerolabel.contract import DiscoveryRequest, DiscoverySpec, PromptRequest
from zerolabel.labelstudio import tasks as ls_format
from zerolabel.labelstudio.interactive import Interaction
from zerolabel.labelstudio.label_config import find_target
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue.dispatch import Dispatcher, Ending, Outcome, connect
from zerolabel.queue.interactive import make_interactive_queue, submit
from zerolabel.queue.writeback import Ledger, Waiting, hold_s
from zerolabel.settings import BackendSettings
from zerolabel.sites import without_user_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectContext:
    """What Label Studio told us about a project in /setup; build it with
    :meth:`PredictionService.context`, which checks the hostname.

    It holds no credentials: workers download with their own ``LABEL_STUDIO_API_KEY``, and the
    token Label Studio sends to /setup is never kept or forwarded.

    Attributes:
        hostname: the configured Label Studio URL /setup named, for ``/data/...`` image URLs;
            None: ``LABEL_STUDIO_URL``.
        options: the project's extra params.
        project_id: the project's id in that Label Studio; late predictions are written only
            to tasks of this project. None: late tasks are not written back.
    """

    hostname: str | None = None
    options: ProjectOptions = field(default_factory=ProjectOptions)
    project_id: int | None = None


PROMPT_SPEC_METHOD = "lost"
"""The method a prompt's spec names: prompts run their own functions; the spec only carries the
backbone, weights and input size (its model_version names the answer)."""

PENDING = "late: still running; its prediction is written to the task when ready"
WRITTEN = "its prediction was written to the task by a worker"


@dataclass(frozen=True)
class Answer:
    """What ``/predict`` answers for one task.

    Attributes:
        prediction: the task's prediction; None when there is none now.
        reason: why there is none.
        pending: a worker writes the prediction to the task when its job finishes.
    """

    prediction: dict[str, Any] | None = None
    reason: str | None = None
    pending: bool = False

    @property
    def entry(self) -> dict[str, Any] | list[Any]:
        """The task's entry in the reply's ``results``: its prediction, or an empty list of
        predictions (Label Studio stores nothing then and logs no error)."""
        return self.prediction if self.prediction is not None else []


class PredictionService:
    """Process-wide: one Redis connection and dispatcher for every request."""

    def __init__(self, settings: BackendSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.sites = settings.discovery.ls_sites()
        self.dispatcher = Dispatcher(
            redis or connect(settings.discovery.queue), settings.discovery.queue
        )
        self.ledger = Ledger(self.dispatcher.redis, settings.discovery.queue.result_ttl_s)
        self.prompts = make_interactive_queue(self.dispatcher.redis, settings.discovery.queue)

    def plan(
        self, label_config: str, options: ProjectOptions
    ) -> tuple[ls_format.Target, DiscoverySpec]:
        """Where regions go and what runs; ConfigError when the config cannot be served."""
        label = options.label or self.settings.label
        pixel_masks = options.pixel_masks(self.settings)
        target = find_target(
            label_config, label=label, shapes=options.shapes, pixel_masks=pixel_masks
        )
        spec = options.spec(self.settings, masks=target.needs_masks, shapes=target.shapes)
        return target, spec

    def model_version(self, label_config: str, options: ProjectOptions) -> str:
        return self.plan(label_config, options)[1].model_version()

    def context(
        self, hostname: str | None, options: ProjectOptions, project_id: int | None = None
    ) -> ProjectContext:
        """The project context for a ``/setup`` call; its access token is never used.

        Args:
            hostname: the Label Studio URL /setup names: empty, ``LABEL_STUDIO_URL`` or one of
                ``ZEROLABEL_LABEL_STUDIO_ALIASES`` (origins compared, default ports filled in).
                Without ``LABEL_STUDIO_URL`` it is not kept: nothing may be sent there.
            options: the project's extra params.
            project_id: the project's id, as /setup names it.

        Raises:
            ConfigError: the hostname is not the configured Label Studio (the message names
                the configured URLs and how to add another name for it).
        """
        site = self.sites.check_hostname(hostname)
        return ProjectContext(site.url if site is not None else None, options, project_id)

    def predict(
        self, tasks: Sequence[dict[str, Any]], label_config: str, context: ProjectContext
    ) -> list[dict[str, Any] | list[Any]]:
        """Exactly one ``results`` entry per task, in order (see :meth:`answer`).

        Raises:
            ConfigError: the labeling config cannot be served, or the context names a Label
                Studio that is not configured (see :meth:`context`).
        """
        return [answer.entry for answer in self.answer(tasks, label_config, context)]

    def answer(
        self, tasks: Sequence[dict[str, Any]], label_config: str, context: ProjectContext
    ) -> list[Answer]:
        """Exactly one answer per task, in order; late tasks are written back when ready.

        Raises:
            ConfigError: the labeling config cannot be served, or the context names a Label
                Studio that is not configured (see :meth:`context`).
        """
        target, spec = self.plan(label_config, context.options)
        version = spec.model_version()
        ls_url = self._ls_url(context)
        answers: list[Answer | None] = [None] * len(tasks)
        requests: dict[int, DiscoveryRequest] = {}
        for index, task in enumerate(tasks):
            image = (task.get("data") or {}).get(target.data_key)
            if not isinstance(image, str) or not image:
                answers[index] = _skipped(task, f"task data has no '{target.data_key}' image URL")
                continue
            requests[index] = DiscoveryRequest(spec, image, task.get("id"), ls_url)
        submitted = self._run(list(requests.values()))
        for index, (job_id, outcome) in zip(requests, submitted, strict=True):
            task = tasks[index]
            waiting = self._waiting(task, target, version, context)
            answers[index] = self._answer(task, job_id, outcome, target, version, waiting)
        return [answer or Answer(reason="no answer") for answer in answers]

    def prompt(
        self,
        task: dict[str, Any],
        label_config: str,
        context: ProjectContext,
        interaction: Interaction,
    ) -> Answer:
        """The object an annotator's clicks (or rectangle) point at, as the answer of an
        interactive ``/predict``: one object, its refined brush mask and its box (linked, one
        object to export), labelled with the smart tool's label where the outputs have it.

        Label Studio sends every click on the object so far; the prompt runs as one job on the
        interactive queue, served by workers before any batch. A request with no smart-tool
        region (an ordinary region drawn with Auto-Annotation on) gets an empty answer.

        Raises:
            ConfigError: the labeling config has no output for the image, or neither output
                has the chosen label.
        """
        if interaction.prompt is None:
            return _skipped(task, "no smart-tool region in the interactive request")
        options = context.options
        label = interaction.label or options.label or self.settings.label
        target = find_target(
            label_config, label=label, image_name=interaction.to_name, shapes="both"
        )
        spec = self._prompt_spec(options, target)
        task_id = task.get("id")
        image = (task.get("data") or {}).get(target.data_key)
        if not isinstance(image, str) or not image:
            return _skipped(task, f"task data has no '{target.data_key}' image URL to click on")
        request = DiscoveryRequest(spec, image, task_id, self._ls_url(context))
        timeout_s = self.settings.wait_timeout_s
        try:
            asked = PromptRequest(request, interaction.prompt)
            job = submit(self.prompts, asked, max(1, int(timeout_s)))
            (outcome,) = self.dispatcher.collect([job], timeout_s, poll_s=0.005, max_poll_s=0.02)
        except (RedisError, OSError) as exc:
            return _skipped(task, self._redis_down(exc))
        result = outcome.result
        if result is None:
            return _skipped(task, outcome.reason or "no result")
        if result.error:
            return _skipped(task, result.error)
        version = spec.model_version()
        return Answer(ls_format.prediction(replace(result, model_version=version), target))

    def _prompt_spec(self, options: ProjectOptions, target: ls_format.Target) -> DiscoverySpec:
        """The project's spec for prompts: its backbone, weights and input size (so a click
        finds the features its batch pass left in the worker's cache), with masks. A project
        served by a detector clicks on the ViT the workers load for their default method."""
        spec = options.spec(self.settings, masks=True, shapes="both")
        size = spec.max_side if spec.max_side is not None else spec.effective_max_side() or 0
        fields: dict[str, Any] = {"params": {}, "fitted": None, "max_side": size}
        if methods.get(spec.method).kind is not methods.MethodKind.FEATURES:
            worker = self.settings.discovery
            fields |= {"backbone": worker.backbone, "weights": worker.weights}
        return replace(spec, method=PROMPT_SPEC_METHOD, **fields)

    def _waiting(
        self, task: dict[str, Any], target: ls_format.Target, version: str, context: ProjectContext
    ) -> Waiting | None:
        """The record of a task that may wait for its job: only for a project whose /setup
        named the configured Label Studio (the only one workers write to) and the project's id,
        and a task id."""
        task_id = task.get("id")
        if context.hostname is None or context.project_id is None or not isinstance(task_id, int):
            return None
        hold = hold_s(self.settings.wait_timeout_s)
        return Waiting(task_id, context.hostname, version, target, hold, context.project_id)

    def _ls_url(self, context: ProjectContext) -> str | None:
        """The configured Label Studio URL the project's relative image URLs belong to.

        The hostname is checked again here, so a context built without :meth:`context` never
        sends a worker anywhere else. None without ``LABEL_STUDIO_URL``: workers then join
        relative URLs to their own, and answer a per-task error naming the setting if they
        have none.

        Raises:
            ConfigError: the context names a Label Studio that is not configured.
        """
        site = self.sites.check_hostname(context.hostname) or self.sites.primary
        return site.url if site is not None else None

    def _run(self, requests: list[DiscoveryRequest]) -> list[tuple[str | None, Outcome]]:
        """Submit and wait; one (job id, outcome) per request, the job id None without Redis."""
        if not requests:
            return []
        try:
            jobs = [self.dispatcher.submit(request) for request in requests]
            outcomes = self.dispatcher.collect(jobs, self.settings.wait_timeout_s)
            return [(job.id, outcome) for job, outcome in zip(jobs, outcomes, strict=True)]
        except (RedisError, OSError) as exc:
            reason = self._redis_down(exc)
            logger.error("%d task(s) left without predictions: %s", len(requests), reason)
            return [(None, Outcome(None, reason, Ending.UNREACHABLE)) for _ in requests]

    def _answer(
        self,
        task: dict[str, Any],
        job_id: str | None,
        outcome: Outcome,
        target: ls_format.Target,
        version: str,
        waiting: Waiting | None,
    ) -> Answer:
        result = outcome.result
        tracked = (job_id, waiting) if job_id is not None and waiting is not None else None
        try:
            if outcome.ending is Ending.LATE and tracked is not None:
                result = self.ledger.wait(*tracked)
                if result is None:
                    logger.info("task %s: %s", task.get("id"), PENDING)
                    return Answer(reason=PENDING, pending=True)
            if result is None:
                return _skipped(task, outcome.reason or "no result")
            if result.error:
                return _skipped(task, result.error)
            if tracked is not None and not self.ledger.may_answer(*tracked):
                logger.info("task %s: %s", task.get("id"), WRITTEN)
                return Answer(reason=WRITTEN)
        except (RedisError, OSError) as exc:
            return _skipped(task, self._redis_down(exc))
        return Answer(ls_format.prediction(replace(result, model_version=version), target))

    def _redis_down(self, exc: BaseException) -> str:
        url = without_user_info(self.settings.discovery.queue.redis_url)  # no password
        return f"Redis unreachable at {url}: {exc}"

    def health(self) -> dict[str, Any]:
        return self.dispatcher.health()


def _skipped(task: dict[str, Any], reason: str) -> Answer:
    logger.warning("task %s: no prediction: %s", task.get("id"), reason)
    return Answer(reason=reason)
