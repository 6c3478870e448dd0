"""How ``zerolabel`` commands fail: ``Error: <one line>`` and a non-zero exit status.

Every command runs under :class:`ZerolabelGroup`, whose :meth:`~ZerolabelGroup.invoke` is the
one place that turns failures a user can fix into a :class:`click.ClickException`. Two exit
statuses tell them apart:

* **2, the command line itself is wrong** (:data:`USAGE_STATUS`): an unknown option, a value of
  the wrong type or out of range, a missing argument, a file argument that does not exist,
  options that do not go together. click finds most of them; commands raise
  :class:`click.UsageError` for the rest. They are shown as one line too, ``Error: <message>
  (see 'zerolabel <command> --help')``, without click's usage block (``--help`` shows it).
* **1, a failure while running** (:data:`FAILURE_STATUS`), described by :func:`user_message`:

  * :class:`~zerolabel.errors.DiscoveryError` (ConfigError, ImageLoadError, WeightsError,
    LabelStudioError...): its message; a Label Studio that gave no reply is named by its URL.
  * :class:`JSONFileError`, :class:`json.JSONDecodeError`: the file (when known), line and
    column.
  * :class:`ValueError`: its message.
  * ``redis.exceptions.RedisError``: ``Redis unreachable at <url>: <cause>``.
  * ``requests.RequestException``: the URL requested (without its query) and the cause.
  * :class:`OSError` (FileNotFoundError, PermissionError...): ``<path>: <reason>``.

Messages are folded onto one line. Library messages may name ``zerolabel predict`` options next
to the settings (``--checkpoint PATH or ZEROLABEL_CHECKPOINT=PATH``); a command without that
option shows the setting only.

Any other exception is a bug in zerolabel: it is not caught, so Python prints its traceback and
the bug can be reported rather than hidden. With ``zerolabel -v`` the traceback of a handled
error is logged as well. KeyboardInterrupt is left to click ("Aborted!"; ``prelabel`` catches it
itself to say how to resume).

Commands :func:`remember_url` the Redis and Label Studio URLs they use, so that a connection
failure names the server it could not reach.
"""

from __future__ import annotations

import json
import logging
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import click

from zerolabel.errors import DiscoveryError
from zerolabel.sites import without_user_info

logger = logging.getLogger("zerolabel")

USAGE_STATUS = 2
"""Exit status of a command line that is wrong (click's own convention)."""
FAILURE_STATUS = 1
"""Exit status of a command that failed while running (a setting, a file, a server)."""

Service = Literal["redis", "label_studio"]
_META_KEY = "zerolabel.urls"

_OPTION_MENTIONS: dict[str, tuple[str, ...]] = {
    # option -> how library messages mention it next to its setting
    "--checkpoint": ("--checkpoint PATH or ",),
    "--cad-checkpoint": (" (or --cad-checkpoint)",),
    "--fitted": (" (or --fitted)",),
    "--half": (" / --half",),
}


def remember_url(service: Service, url: str | None) -> None:
    """Note the server the running command talks to, for the message if it cannot be reached
    (without the URL's user info: a Redis URL can carry the password)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and url:
        ctx.meta.setdefault(_META_KEY, {})[service] = without_user_info(url)


def _remembered(ctx: click.Context | None, service: Service) -> str | None:
    urls: dict[str, str] = ctx.meta.get(_META_KEY, {}) if ctx is not None else {}
    return urls.get(service)


class CommandFailed(click.ClickException):
    """A command that failed while running, shown as ``Error: <message>``."""

    exit_code = FAILURE_STATUS


class OneLineUsageError(click.UsageError):
    """A wrong command line, shown as ``Error: <message> (see '<command> --help')``."""

    exit_code = USAGE_STATUS

    def show(self, file: IO[Any] | None = None) -> None:
        hint = ""
        if self.ctx is not None and self.ctx.command.get_help_option(self.ctx) is not None:
            hint = f" (see '{self.ctx.command_path} --help')"
        message = " ".join(self.format_message().split()).removesuffix(".")
        click.echo(f"Error: {message}{hint}", file=file, err=file is None)


def _one_line(exc: click.UsageError) -> click.UsageError:
    """``exc`` as a :class:`OneLineUsageError`; the help a bare group shows stays as it is."""
    if isinstance(exc, OneLineUsageError | click.exceptions.NoArgsIsHelpError):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


class ZerolabelGroup(click.Group):
    """The ``zerolabel`` group: its commands fail with one line, see the module docstring."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's options, arguments, or its own refusal
            raise _one_line(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            name = ctx.invoked_subcommand
            command = self.commands.get(name) if name else None
            message = user_message(exc, ctx, command)
            if message is None:
                raise  # a bug: keep its traceback
            logger.debug("zerolabel %s failed", name or "", exc_info=exc)
            raise CommandFailed(message) from None


def user_message(
    exc: BaseException, ctx: click.Context | None = None, command: click.Command | None = None
) -> str | None:
    """One line saying what went wrong, or None when ``exc`` is not a user-facing failure."""
    message = _describe(exc, ctx)
    if message is None:
        return None
    if command is not None:
        message = _without_missing_options(message, command)
    return " ".join(message.split()) or type(exc).__name__


def _describe(exc: BaseException, ctx: click.Context | None) -> str | None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from requests import RequestException

    if isinstance(exc, DiscoveryError):
        return _discovery_message(exc, ctx)
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, ValueError):
        return str(exc)
    if isinstance(exc, RedisError):
        url = _remembered(ctx, "redis")
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            return f"Redis unreachable at {url or 'REDIS_URL'}: {exc}"
        return f"Redis at {url or 'REDIS_URL'}: {exc}"
    if isinstance(exc, RequestException):  # before OSError: it is one
        request = getattr(exc, "request", None)
        url = getattr(request, "url", None)
        where = f" to {_without_query(str(url))}" if url else ""
        return f"HTTP request{where} failed ({type(exc).__name__}): {exc}"
    if isinstance(exc, OSError):
        return _os_message(exc)
    return None


def _discovery_message(exc: DiscoveryError, ctx: click.Context | None) -> str:
    from zerolabel.errors import LabelStudioError

    url = _remembered(ctx, "label_studio")
    if isinstance(exc, LabelStudioError) and exc.status is None and url:
        return f"cannot reach Label Studio at {url}: {exc}"
    return str(exc)


def _os_message(exc: OSError) -> str:
    if exc.filename is None:
        return str(exc)
    reason = exc.strerror or type(exc).__name__
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    return f"{exc.filename}: {reason}"


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else url


def _without_missing_options(message: str, command: click.Command) -> str:
    present = {opt for param in command.params for opt in param.opts}
    for option, mentions in _OPTION_MENTIONS.items():
        if option not in present:
            for mention in mentions:
                message = message.replace(mention, "")
    return message
