"""Cost budgets and the per-request deadline: checked before work starts, and while it runs.

Every request's cost (pixels, vertices, layers, values read, bytes) is counted before
any data is read and compared with a budget of the :class:`~sdmatlas.settings.Settings`
by :func:`check`; the refusal names the budget, its setting, the request's cost and
what to do instead.

Long loops call :func:`check_deadline`, which raises once the deadline of the request
in progress has passed. The deadline lives in a context variable set by the web layer
for each request (:func:`deadline`); worker threads see it because Starlette and anyio
run thread work in a copy of the caller's context. Code run outside a request (the CLI,
tests) has no deadline.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sdmatlas.errors import BudgetExceededError, DeadlineExceededError

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "sdmatlas_deadline", default=None
)


def check(name: str, setting: str, cost: int, limit: int, advice: str) -> None:
    """Refuse (413) a request whose ``cost`` is over the budget ``limit``."""
    if cost > limit:
        raise BudgetExceededError(
            f"{name}: this request needs {cost:,}, over the budget of {limit:,} "
            f"(SDMATLAS_{setting.upper()}) by {cost - limit:,}; {advice}"
        )


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Run the enclosed request work under a deadline ``seconds`` from now."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """Raise :class:`DeadlineExceededError` if the current request's deadline has passed."""
    at = _DEADLINE.get()
    if at is not None and time.monotonic() > at:
        raise DeadlineExceededError(
            "the request ran past its deadline (SDMATLAS_REQUEST_DEADLINE_SECONDS) and was "
            "stopped: retry later, or ask for less (a smaller map or area)"
        )
