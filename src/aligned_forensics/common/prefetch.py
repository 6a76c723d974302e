"""Bounded read-ahead: decode the next batches on threads while the model works on this one."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def prefetch_map(pool: ThreadPoolExecutor, function: Callable[[In], Out], items: Iterable[In], *,
                 ahead: int = 2) -> Iterator[Out]:
    """Like `pool.map`, in order, but with at most `ahead` results waiting in memory."""
    iterator = iter(items)
    pending: deque[Future[Out]] = deque()
    for item in iterator:
        pending.append(pool.submit(function, item))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.popleft().result()
        for item in iterator:
            pending.append(pool.submit(function, item))
            break
        yield result
