"""Test-only kill points for the fault suite (tests/faults/): never on a real install.

A `schedctl` process started with this directory on its PYTHONPATH and with
``FAULT_KILL_AT="package.module:Qualified.name:before|after[:nth]"`` wraps that
function as soon as its module is imported, so that the process SIGKILLs itself
right before the ``nth`` call (default 1) starts, or right after it returns. A
kill point is a function, not a moment: the same run dies at the same place every
time, with no timing involved. src carries no test hooks.

Several points may be given, separated by commas; the first one reached kills.

``FAULT_PAUSE_AT`` takes the same points with the seconds to pause as a fifth field
(``...:after:1:5``): the thread that reaches one sleeps there instead of dying, so
a test can cut the process off from its database at a known place in its work.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

_SPEC = os.environ.get("FAULT_KILL_AT", "")
_PAUSE_SPEC = os.environ.get("FAULT_PAUSE_AT", "")

# (qualified name, "before" | "after", nth call, what happens there)
_Point = tuple[str, str, int, Callable[[], None]]


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(function: Any, when: str, nth: int, act: Callable[[], None]) -> Any:
    calls = 0
    counting = threading.Lock()  # dispatch calls the same function from several threads

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        with counting:
            calls += 1
            this = calls
        if when == "before" and this == nth:
            act()
        result = function(*args, **kwargs)
        if when == "after" and this == nth:
            act()
        return result

    return wrapper


def _install(module: ModuleType, point: _Point) -> None:
    qualname, when, nth, act = point
    *owners, name = qualname.split(".")
    holder: Any = module
    for part in owners:
        holder = getattr(holder, part)
    setattr(holder, name, _wrap(getattr(holder, name), when, nth, act))


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, points: list[_Point]) -> None:
        self.inner = inner
        self.points = points

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        for point in self.points:
            _install(module, point)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, points: dict[str, list[_Point]]) -> None:
        self.points = points

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.points:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)  # type: ignore[attr-defined]
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self.points[name])
                return spec
        return None


def _parse(text: str, name: str, pause: bool) -> dict[str, list[_Point]]:
    points: dict[str, list[_Point]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        module, qualname, when, *rest = item.split(":")
        if when not in ("before", "after"):
            raise SystemExit(f"{name}: {item!r}: 'before' or 'after', not {when!r}")
        nth = int(rest[0]) if rest else 1
        act = _die
        if pause:
            seconds = float(rest[1])
            act = functools.partial(time.sleep, seconds)
        points.setdefault(module, []).append((qualname, when, nth, act))
    return points


_POINTS = _parse(_SPEC, "FAULT_KILL_AT", False)
for _module, _paused in _parse(_PAUSE_SPEC, "FAULT_PAUSE_AT", True).items():
    _POINTS.setdefault(_module, []).extend(_paused)
if _POINTS:
    sys.meta_path.insert(0, _Finder(_POINTS))
