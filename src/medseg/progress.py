"""Progress bars with an ETA for long commands (evaluate, predict, export, data generation), on stderr.

A bar is shown only when stderr is a terminal, so logs and pipes stay clean; ``MEDSEG_PROGRESS=1`` forces
it on (``0`` off). The bars are rich's (a core dependency, as is Lightning's training bar), transient:
they disappear when the work is done and leave the command's own output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: ``1`` forces the bars on (e.g. under a terminal multiplexer that hides the TTY), ``0`` off.
ENV = "MEDSEG_PROGRESS"


def progress_enabled() -> bool:
    """Whether bars are shown: ``MEDSEG_PROGRESS`` if set, else whether stderr is a terminal."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Quiet:
    """The bar's interface when no bar is shown."""

    def advance(self, n: int = 1) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description=text)


@contextmanager
def progress_bar(description: str, total: int | None, *, console: Any = None) -> Iterator[_Bar | _Quiet]:
    """A bar ``description  ━━━━╸  n/total  elapsed  ETA`` on stderr while the block runs (or nothing).

    ``console``: a rich console to draw on (tests pass one that records); given, the bar is always shown.
    """
    if console is None and not progress_enabled():
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console or Console(file=sys.stderr, force_terminal=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))


def track(items: Iterable[T], description: str, total: int | None = None, *, console: Any = None) -> Iterator[T]:
    """Yield ``items`` while a :func:`progress_bar` counts them (for loops that cannot raise: an exception in the
    loop body leaves the bar drawn until the generator is collected; use :func:`progress_bar` there)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, console=console) as bar:
        for item in items:
            yield item
            bar.advance()
