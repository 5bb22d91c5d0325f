"""Log to one MLflow run from a background thread, so a training loop never waits on MLflow.

The loop hands each call (metrics, tags, a folder of artifacts) to a bounded queue and moves
on. One worker thread makes the calls in order, each with ``serlens.shared.tracking``'s
bounded retries. When the tracking server goes away, the worker keeps the calls it could not
make in a backlog (in order) and tries again every ``reconnect_interval_s``; when the server
comes back, it catches up. ``close`` waits, up to a deadline, until everything is logged, and
otherwise raises ``TrackingError`` naming the first error, so nothing is lost silently.

Calls must be idempotent, since a call whose reply was lost is made again: metric rows carry
their own timestamps (``tracking.log_metric_rows``), and folders go through
``tracking_artifacts.repair_folder``, which uploads only what the run lacks.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serlens.shared import tracking, tracking_artifacts
from serlens.shared.errors import TrackingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Call:
    what: str
    run: Callable[[], Any]


class RunLogger:
    """A background logger for one run.

    Args:
        config: where the run lives, and the retry policy of each call.
        run_id: the run.
        queue_size: calls the loop may hand over before ``submit`` waits for the worker
            (which only happens while the worker is inside one bounded call).
        reconnect_interval_s: wait between tries while the tracking server is unreachable, in s.
    """

    def __init__(self, config: tracking.TrackingConfig, run_id: str, *, queue_size: int = 1024,
                 reconnect_interval_s: float = 2.0) -> None:
        self.config, self.run_id = config, run_id
        self.reconnect_interval_s = reconnect_interval_s
        self._queue: queue.Queue[_Call] = queue.Queue(maxsize=queue_size)
        self._backlog: collections.deque[_Call] = collections.deque()
        self._changed = threading.Condition()
        self._pending = 0  # calls submitted and neither done nor dropped
        self._dropped: list[str] = []
        self._first_error: BaseException | None = None
        self._offline_since: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"mlflow-{run_id[:8]}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the loop's side

    def log_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log metric rows ``{name, value, step, timestamp_ms}`` (see ``tracking.log_metric_rows``)."""
        if rows:
            batch = [dict(r) for r in rows]
            self.submit(f"log {len(batch)} metric value(s)",
                        lambda: tracking.log_metric_rows(self.config, self.run_id, batch))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run."""
        frozen = dict(tags)
        self.submit("set tags", lambda: tracking.set_tags(self.config, self.run_id, frozen))

    def log_folder(self, folder: Path, artifact_path: str, *, exclude: Iterable[str] = ()) -> None:
        """Upload what the run lacks of ``folder`` under ``artifact_path``, then its manifest."""
        skip = frozenset(exclude)
        self.submit(f"upload {folder}", lambda: tracking_artifacts.repair_folder(
            self.config, self.run_id, folder, artifact_path, exclude=skip))

    def submit(self, what: str, run: Callable[[], Any]) -> None:
        """Hand one idempotent call to the worker.

        Raises:
            TrackingError: after ``close``.
        """
        if self._stop.is_set():
            raise TrackingError(f"the MLflow logger of run {self.run_id} is closed; cannot {what}")
        with self._changed:
            self._pending += 1
        self._queue.put(_Call(what, run))

    @property
    def offline_since(self) -> float | None:
        """``time.time()`` when the tracking server stopped answering, or None while it answers."""
        return self._offline_since

    def flush(self, timeout_s: float) -> bool:
        """Wait until every call so far is made (or dropped); False at the deadline."""
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._pending and time.monotonic() < deadline:
                self._changed.wait(min(0.1, max(deadline - time.monotonic(), 0.0)))
            return self._pending == 0

    def close(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every call to be made, then stop the worker.

        Raises:
            TrackingError: when calls were still not made at the deadline, or were dropped as
                refused; it names how many and the first error.
        """
        caught_up = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(1.0, self.config.request_timeout_s))
        if caught_up and not self._dropped:
            return
        with self._changed:
            pending, dropped, first = self._pending, list(self._dropped), self._first_error
        raise TrackingError(
            f"MLflow at {self.config.tracking_uri}: run {self.run_id} is missing {pending} call(s) not made "
            f"within {timeout_s:.0f} s and {len(dropped)} refused ({'; '.join(dropped[:3]) or 'none'}); "
            f"first error: {first}"
        )

    # ------------------------------------------------------------------ the worker's side

    def _next(self) -> _Call | None:
        if self._backlog:
            return self._backlog.popleft()
        try:
            return self._queue.get(timeout=0.1)
        except queue.Empty:
            return None

    def _settle(self, call: _Call, error: BaseException | None) -> None:
        with self._changed:
            if error is not None:
                self._dropped.append(f"{call.what}: {error}")
                self._first_error = self._first_error or error
            self._pending -= 1
            self._changed.notify_all()

    def _work(self) -> None:
        while not self._stop.is_set():
            call = self._next()
            if call is None:
                continue
            try:
                call.run()
            except TrackingError as err:
                if tracking.is_permanent(err.__cause__ or err):
                    log.error("MLflow refused to %s for run %s: %s", call.what, self.run_id, err)
                    self._settle(call, err)
                    continue
                self._go_offline(call, err)
                continue
            except Exception as err:  # a local problem (a folder gone): no retry can fix it
                log.error("cannot %s for run %s: %s", call.what, self.run_id, err)
                self._settle(call, err)
                continue
            if self._offline_since is not None:
                log.warning("MLflow at %s answers again; catching up run %s", self.config.tracking_uri, self.run_id)
                self._offline_since = None
            self._settle(call, None)

    def _go_offline(self, call: _Call, err: TrackingError) -> None:
        """Keep ``call`` (and everything queued behind it) for later, then wait a while."""
        if self._offline_since is None:
            self._offline_since = time.time()
            log.warning("MLflow at %s is unreachable (%s); training goes on, logging will catch up",
                        self.config.tracking_uri, err)
        with self._changed:
            self._first_error = self._first_error or err
        self._backlog.appendleft(call)
        # Until the next try, keep draining the queue, so the loop never waits on a full one.
        deadline = time.monotonic() + self.reconnect_interval_s
        while time.monotonic() < deadline and not self._wake.is_set():
            try:
                self._backlog.append(self._queue.get(timeout=0.02))
            except queue.Empty:
                continue
        self._wake.clear()
