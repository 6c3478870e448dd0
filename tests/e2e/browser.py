"""Label Studio's labeling page in a headless Chromium, driven as an annotator would.

The browser is the system's Chromium (Debian's ``chromium`` package; Playwright's own browser
download is not needed), found from ``ZEROLABEL_CHROMIUM`` or ``chromium`` on the PATH, and
driven with Playwright. :func:`chromium` starts it; :class:`Annotator` logs in to the Label
Studio of the ``label_studio`` fixture and works on one task's labeling page:

- :meth:`Annotator.open` opens ``/projects/<p>/data?task=<t>`` and waits for the image;
- :meth:`Annotator.enable_auto_annotation` and :meth:`Annotator.set_auto_accept` flip the
  bottom bar's "Auto-Annotation" and "Auto-Accept Suggestions" toggles;
- :meth:`Annotator.click` places a smart keypoint at a point of the image given in fractions
  of its width and height (``negative`` holds Alt, a background click), :meth:`Annotator.drag`
  draws a smart rectangle; both pick the smart tool (as the toolbar's "Auto-Detect" menu
  does) and its label (with the label's hotkey) and wait for Label Studio's
  ``/api/ml/<id>/interactive-annotating`` answer;
- :meth:`Annotator.regions` and :meth:`Annotator.suggestions` read the annotation's regions
  and the suggestions shown on it from the page's own store (``window.Htx``);
  :meth:`Annotator.accept_suggestions` and :meth:`Annotator.submit` press the bottom bar's
  buttons, and :func:`stored_annotations` reads what Label Studio saved.

Label Studio 1.23 behaviours this relies on (read from its frontend, seen here): the smart
tools show only while "Auto-Annotation" is on, and every control is smart unless
``smart="false"``; "M" picks the first smart tool only; a label is unselected after each region
is drawn (unless the annotator keeps labels selected), so each click selects it again; a click
on an existing region selects that region and draws nothing; a keypoint drawn with Alt held is
sent with ``is_positive: false``; one request's ``context.result`` holds every region of the
drawn one's type and label on the image (the smart ones drawn since suggestions were last
accepted, and regions of other controls, such as an accepted box), and accepting suggestions
deletes the smart ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.ls_server import LabelStudio

if TYPE_CHECKING:
    from playwright.sync_api import Browser

USER = ("e2e@zerolabel.test", "zerolabel-e2e-pass")  # tests/ls_server.py starts LS with these
WAIT_MS = 120_000
"""The longest wait for a page, an image or an answer (a guard against a hang, not a limit)."""
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
INTERACTIVE = "/interactive-annotating"

# The page's store, read in the browser. `Htx` is the labeling app's root store.
_STATE = """(image) => {
  const store = window.Htx;
  const annotation = store && store.annotationStore && store.annotationStore.selected;
  if (!annotation) return null;
  const tag = annotation.names.get(image);
  const ref = tag && tag.imageRef;
  const tools = window.ToolManager.allInstances().flatMap((m) => m.allTools());
  const selected = tools.find((t) => t.selected);
  const labels = [];
  for (const [name, control] of annotation.names) {
    for (const label of control.children || []) {
      if (label.value !== undefined) {
        labels.push({control: name, value: label.value, hotkey: label.hotkey || null,
                     selected: !!label.selected});
      }
    }
  }
  return {
    ready: !!(ref && ref.complete && ref.naturalWidth > 0),
    autoAnnotation: !!store.autoAnnotation,
    autoAccept: !!store.autoAcceptSuggestions,
    awaiting: !!store.awaitingSuggestions,
    selectedRegions: annotation.selectedRegions.length,
    labels,
    smartTools: tools.filter((t) => t.dynamic).map((t) => ({
      name: t.fullName, control: t.control && t.control.name})),
    tool: selected ? {name: selected.fullName, control: selected.control && selected.control.name,
                      dynamic: !!selected.dynamic} : null,
  };
}"""
_SELECT_TOOL = """([control, name]) => {
  for (const manager of window.ToolManager.allInstances()) {
    const tool = manager.allTools().find((t) =>
      t.dynamic && t.fullName === name && t.control && t.control.name === control);
    if (tool) { manager.selectTool(tool, true); return true; }
  }
  return false;
}"""
_IMAGE_RECT = """(image) => {
  const r = window.Htx.annotationStore.selected.names.get(image).imageRef.getBoundingClientRect();
  return [r.x, r.y, r.width, r.height];
}"""
_REGIONS = "() => window.Htx.annotationStore.selected.serializeAnnotation()"
_SUGGESTIONS = """() => {
  const annotation = window.Htx.annotationStore.selected;
  return Array.from(annotation.suggestions.values()).flatMap((region) =>
    region.results.map((result) => ({
      id: region.cleanId, type: result.type, from_name: result.from_name.name,
      to_name: result.to_name.name, score: result.score ?? region.score ?? null})));
}"""


def chromium_path() -> str | None:
    """The Chromium to drive: ``ZEROLABEL_CHROMIUM``, else ``chromium`` on the PATH."""
    return os.environ.get("ZEROLABEL_CHROMIUM") or shutil.which("chromium")


def require_chromium() -> str:
    """The Chromium's path, once Playwright and the browser are known to be there; otherwise
    the test is skipped, or fails when ``ZEROLABEL_REQUIRE_E2E`` is set (as ``.ci/run`` does).
    Cheap: a module asks first (``usefixtures``), before Label Studio starts."""
    if importlib.util.find_spec("playwright") is None:
        _missing("Playwright is not installed: pip install -e '.[dev]'")
    path = chromium_path()
    if path is None or not os.access(path, os.X_OK):
        _missing(
            "no Chromium to drive: apt-get install chromium, or set ZEROLABEL_CHROMIUM to its "
            "executable (see .ci/run)"
        )
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium (a Playwright ``Browser``), see :func:`require_chromium`."""
    path = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=list(FLAGS))
        try:
            yield browser
        finally:
            browser.close()


def _missing(reason: str) -> NoReturn:
    if os.environ.get("ZEROLABEL_REQUIRE_E2E"):
        pytest.fail(f"ZEROLABEL_REQUIRE_E2E is set but {reason}")
    pytest.skip(reason)


@dataclass
class Answer:
    """Label Studio's answer to one interactive request: what the page asked and got."""

    request: dict[str, Any]  # the body the page posted: {"task", "context": {"result": [...]}}
    response: dict[str, Any]  # {"data": {"result": [...], ...}} or {"errors": [...]}
    seconds: float  # from the mouse input to the answer shown (reported, never asserted)

    @property
    def result(self) -> list[dict[str, Any]]:
        """The regions the backend returned (empty on an error)."""
        data = self.response.get("data") or {}
        return list(data.get("result") or [])


class Annotator:
    """One logged-in annotator on one Label Studio (see the module's docstring)."""

    def __init__(self, browser: Browser, ls: LabelStudio, *, image: str = "image") -> None:
        self.ls = ls
        self.image = image
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []  # uncaught errors of the page's scripts
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self._login()

    def close(self) -> None:
        self.context.close()

    def _login(self) -> None:
        page = self.page
        page.goto(f"{self.ls.url}/user/login/")
        page.fill("input[name=email]", USER[0])
        page.fill("input[name=password]", USER[1])
        with page.expect_navigation():
            page.click("button[type=submit]")
        if "/user/login" in page.url:
            raise AssertionError(f"login to {self.ls.url} as {USER[0]} failed")

    # -- the page -----------------------------------------------------------------------

    def open(self, project: int, task: int) -> None:
        """Open the task's labeling page and wait until its image is shown."""
        self.page.goto(f"{self.ls.url}/projects/{project}/data?task={task}")
        self.page.wait_for_function(
            f"(image) => {{ const s = ({_STATE})(image); return s && s.ready; }}", arg=self.image
        )

    def state(self) -> dict[str, Any]:
        """The labeling page's state: toggles, labels (with hotkeys), smart tools, the tool."""
        state = self.page.evaluate(_STATE, self.image)
        if state is None:
            raise AssertionError("no annotation is open on the labeling page")
        return dict(state)

    def enable_auto_annotation(self) -> None:
        """Switch the bottom bar's "Auto-Annotation" on (it shows the smart tools)."""
        if not self.state()["autoAnnotation"]:
            self.page.click("[data-testid=bottombar-auto-annotation-toggle]")
            self._blur()
        if not self.state()["autoAnnotation"]:
            raise AssertionError("the Auto-Annotation toggle did not switch on")

    def set_auto_accept(self, on: bool) -> None:
        """Set "Auto-Accept Suggestions" (shown while no suggestion is pending)."""
        if self.state()["autoAccept"] != on:
            self.page.click("[data-testid=bottombar-auto-accept-toggle]")
            self._blur()
        if self.state()["autoAccept"] != on:
            raise AssertionError(f"the Auto-Accept Suggestions toggle did not switch to {on}")

    def _blur(self) -> None:
        """Take the focus off a toggle: hotkeys are ignored while an input has it."""
        self.page.evaluate("() => document.activeElement && document.activeElement.blur()")

    # -- drawing with smart tools ---------------------------------------------------------

    def use_smart_tool(self, control: str, label: str, tool: str) -> None:
        """Select the smart ``tool`` (e.g. ``KeyPointTool``) of ``control``, then its ``label``
        with the label's hotkey (after "U" unselects a selected region).

        The tool is selected as the toolbar's "Auto-Detect" menu does it (its tool manager's
        ``selectTool``): Label Studio 1.23's "M" hotkey always picks the first smart tool.
        """
        wanted = f"{tool}-dynamic"
        state = self.state()
        if state["selectedRegions"]:  # a label pressed now would relabel the region
            self.page.keyboard.press("u")  # "Unselect Region"
        if not self.page.evaluate(_SELECT_TOOL, [control, wanted]):
            raise AssertionError(
                f"no smart {tool} for {control!r} on the page (smart tools: "
                f"{state['smartTools']}; is Auto-Annotation on, and {control!r} smart?)"
            )
        entry = self._label(control, label)
        if not entry["selected"]:
            if not entry["hotkey"]:
                raise AssertionError(f"label {label!r} of {control!r} has no hotkey")
            self.page.keyboard.press(entry["hotkey"])
        state = self.state()
        current, entry = state["tool"], self._label(control, label, state)
        if not (current and current["name"] == wanted and current["control"] == control):
            raise AssertionError(f"could not select the smart {tool} of {control!r}: {current}")
        if not entry["selected"]:
            raise AssertionError(f"could not select label {label!r} of {control!r}")

    def _label(
        self, control: str, value: str, state: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        labels = (state or self.state())["labels"]
        for entry in labels:
            if entry["control"] == control and entry["value"] == value:
                return dict(entry)
        raise AssertionError(f"no label {value!r} on {control!r}: {labels}")

    def image_point(self, fx: float, fy: float) -> tuple[float, float]:
        """The page coordinates of a point of the image, in fractions of its width and height."""
        if not (0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0):
            raise ValueError(f"({fx}, {fy}) is not a point of the image: fractions in [0, 1]")
        x, y, width, height = self.page.evaluate(_IMAGE_RECT, self.image)
        return x + fx * width, y + fy * height

    def click(
        self,
        fx: float,
        fy: float,
        *,
        negative: bool = False,
        control: str = "click",
        label: str = "object",
    ) -> Answer:
        """A smart keypoint at (``fx``, ``fy``) of the image, Alt held for a ``negative`` one;
        returns Label Studio's answer once the page has shown it."""
        self.use_smart_tool(control, label, "KeyPointTool")
        x, y = self.image_point(fx, fy)
        with self._answer() as answer:
            if negative:
                self.page.keyboard.down("Alt")
            try:
                self.page.mouse.click(x, y)
            finally:
                if negative:
                    self.page.keyboard.up("Alt")
        return answer.value

    def drag(
        self,
        box: tuple[float, float, float, float],
        *,
        control: str = "drag",
        label: str = "object",
    ) -> Answer:
        """A smart rectangle from (x0, y0) to (x1, y1), fractions of the image."""
        self.use_smart_tool(control, label, "RectangleTool")
        x0, y0 = self.image_point(box[0], box[1])
        x1, y1 = self.image_point(box[2], box[3])
        with self._answer() as answer:
            self.page.mouse.move(x0, y0)
            self.page.mouse.down()
            self.page.mouse.move(x1, y1, steps=8)
            self.page.mouse.up()
        return answer.value

    @contextlib.contextmanager
    def _answer(self) -> Iterator[_Pending]:
        """Wait, after the block, for the interactive request it caused, its answer and its
        display. A click on an existing region selects that region and draws nothing: that
        fails at once, naming the cause."""
        pending = _Pending()
        start = time.monotonic()
        with self.page.expect_request(lambda r: INTERACTIVE in r.url) as caught:
            yield pending
            if self.state()["selectedRegions"]:
                raise AssertionError(
                    "the smart tool drew nothing: it landed on a region of the annotation, "
                    "which Label Studio selects instead"
                )
        request = caught.value
        response = request.response()
        if response is None:
            raise AssertionError(f"no answer to {request.url}: {request.failure}")
        body = response.json()
        self.page.wait_for_function(f"(image) => !({_STATE})(image).awaiting", arg=self.image)
        pending.value = Answer(request.post_data_json or {}, body, time.monotonic() - start)

    # -- reading and saving -------------------------------------------------------------

    def regions(self) -> list[dict[str, Any]]:
        """The annotation's regions as Label Studio serializes them (suggestions excluded)."""
        return list(self.page.evaluate(_REGIONS))

    def suggestions(self) -> list[dict[str, Any]]:
        """The suggestions shown on the annotation: id, type, from_name, to_name, score."""
        return list(self.page.evaluate(_SUGGESTIONS))

    def accept_suggestions(self) -> None:
        """Press the bottom bar's accept button (all suggestions become regions)."""
        self.page.click("[data-testid=bottombar-accept-suggestions-button]")
        self.page.wait_for_function(
            "() => window.Htx.annotationStore.selected.suggestions.size === 0"
        )

    def submit(self, task: int) -> list[dict[str, Any]]:
        """Submit the annotation; the task's annotations as Label Studio stored them."""
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and "/annotations" in r.url
        ) as caught:
            self.page.click("[data-testid=bottombar-submit-button]")
        if caught.value.status >= 400:
            raise AssertionError(f"submit answered {caught.value.status}: {caught.value.text()}")
        return stored_annotations(self.ls, task)


class _Pending:
    value: Answer


def stored_annotations(ls: LabelStudio, task: int) -> list[dict[str, Any]]:
    """The task's annotations as Label Studio's API gives them."""
    return list(ls.api("GET", f"/api/tasks/{task}/annotations").json())
