"""Listing runs through the run index: newest first, filtered, in pages that stay fast.

The index is a set of Redis sorted sets of run ids scored by creation time (ms), one for
every run, one per status, per workflow name, per workflow name and status, and per
correlation id. The scripts that create runs and change their status keep it in the same
atomic call (lua/run_index.lua), so a listing reads one sorted set and never scans runs:
a page costs O(log N + page) whatever the number of runs.

Design notes:
- Filters on status and workflow name (alone or together) read a set of their own; a
  correlation id reads its set and checks the other filters on each record (a correlation
  id names few runs). A time window is a score range of the set.
- Pages are keyset pages: the cursor is the (creation time, run id) of the last run shown,
  so a page stays the same while newer runs arrive, and costs the same deep in the list.
- An ended run's entries go when its keys expire: each creation and end takes off a few
  due entries (`<prefix>:runs:expiring`), and a reader that meets a run whose record has gone
  takes it off the set it read and asks for a bounded trim.
No Celery here, and no masking: callers show the records (app.runtime.masking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from app.store.base import StoreBase
from app.store.keys import (
    RUNS_INDEX,
    run_key,
    runs_by_correlation,
    runs_by_status,
    runs_by_workflow,
    runs_by_workflow_status,
)
from app.store.records import now_ms
from app.store.status import RunStatus

LISTED_FIELDS: Final = (
    "workflowId", "workflowType", "version", "status", "correlationId", "createTime",
    "startTime", "endTime", "reasonForIncompletion", "failedReferenceTaskName",
    "parentWorkflowId", "maskedFields",
)
"""The fields of a run's record a listing reads (no payloads)."""

MAX_PAGE: Final = 500
SCAN_LIMIT: Final = 10_000
"""How many index entries one page looks through at most when it checks records (a
correlation id with other filters, or runs whose records have gone)."""
_BATCH: Final = 200
_TRIM_ON_READ: Final = 100


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the creation time and id of its last run."""

    created: int
    run_id: str

    def __str__(self) -> str:
        return f"{self.created}:{self.run_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """ValueError with a sentence for text that is not `<ms>:<run id>`."""
        created, sep, run_id = text.partition(":")
        if not sep or not run_id or not created.isdigit():
            raise ValueError(f"{text!r} is not a page cursor (<ms>:<run id>)")
        return cls(int(created), run_id)


@dataclass(frozen=True)
class RunQuery:
    """Which runs a listing wants; every filter is optional."""

    status: RunStatus | None = None
    workflow: str | None = None
    """The workflow's name (`workflowType`)."""
    correlation_id: str | None = None
    since_ms: int | None = None
    """Only runs created at or after this time (epoch ms)."""
    until_ms: int | None = None
    """Only runs created at or before this time (epoch ms)."""
    limit: int = 50
    after: Cursor | None = None
    """The cursor of the page before: this page starts after it."""

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError(f"limit: {self.limit} is not between 1 and {MAX_PAGE}")


@dataclass(frozen=True)
class RunPage:
    runs: list[dict[str, str]]
    """The runs' records (LISTED_FIELDS that are set), newest first."""
    total: int | None
    """How many runs match in all (with entries not yet trimmed), when the set tells."""
    next: Cursor | None
    """The cursor of the next page; None on the last."""


class RunIndex(StoreBase):
    """The listing part of RunStore."""

    def query_runs(self, query: RunQuery) -> RunPage:
        """A page of the runs that match, newest first."""
        key, exact = _index_of(query)
        top: float | str = query.until_ms if query.until_ms is not None else "+inf"
        bottom: float | str = query.since_ms if query.since_ms is not None else "-inf"
        after = query.after
        if after is not None:
            top = after.created if query.until_ms is None else min(after.created, query.until_ms)
        wanted = query.limit + 1  # one more tells whether a next page exists
        found: list[tuple[float, dict[str, str]]] = []
        gone: list[str] = []
        offset = scanned = 0
        while len(found) < wanted and scanned < SCAN_LIMIT:
            batch = self.guard(lambda o=offset: self.client.zrevrangebyscore(
                key, top, bottom, start=o, num=_BATCH, withscores=True))
            offset += len(batch)
            scanned += len(batch)
            # within one creation time the set orders ids backwards: skip those at or above
            # the cursor's
            shown = [(str(run_id), score) for run_id, score in batch
                     if after is None or score < after.created or str(run_id) < after.run_id]
            records = self._listed([run_id for run_id, _ in shown])
            for (run_id, score), record in zip(shown, records, strict=True):
                if not record:
                    gone.append(run_id)
                elif _matches(record, query):
                    found.append((score, record))
            if len(batch) < _BATCH:
                break
        if gone:
            self._prune(key, gone)
        total = None
        if exact:
            total = int(self.guard(lambda: self.client.zcount(
                key, bottom, query.until_ms if query.until_ms is not None else "+inf")))
        page = found[:query.limit]
        following = None
        if len(found) > query.limit:
            score, last = page[-1]
            following = Cursor(int(score), last["workflowId"])
        return RunPage([record for _, record in page], total, following)

    def index_existing_runs(self, batch: int = 500) -> int:
        """Index every run in the store (runs written before the index existed); returns how
        many were found. A scan of the keyspace: for an upgrade, not for every start."""
        prefix = run_key("")[:-1]  # `<prefix>:run:{`
        found = 0
        ids: list[str] = []
        for key in self.guard(lambda: list(self.client.scan_iter(match=f"{prefix}*}}",
                                                                 count=1000))):
            ids.append(str(key)[len(prefix):-1])
            if len(ids) >= batch:
                found += int(self.call("index_runs", [], [now_ms(), *ids]))
                ids = []
        if ids:
            found += int(self.call("index_runs", [], [now_ms(), *ids]))
        return found

    def trim_run_index(self, most: int = _TRIM_ON_READ) -> int:
        """Take off the index up to `most` entries of runs whose keys expired; returns how
        many were due."""
        return int(self.call("trim_index", [], [now_ms(), most]))

    def _listed(self, run_ids: list[str]) -> list[dict[str, str]]:
        if not run_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hmget(run_key(run_id), list(LISTED_FIELDS))
        return [{name: str(value) for name, value in zip(LISTED_FIELDS, values, strict=True)
                 if value is not None} for values in self.execute(pipe)]

    def _prune(self, key: str, gone: list[str]) -> None:
        """Runs whose records have gone leave the set just read; the trim takes them off
        the others (their entries are due in `expiring`)."""
        self.guard(lambda: self.client.zrem(key, *gone))
        self.trim_run_index()

    def unindex_pipe(self, pipe: Any, run_id: str, fields: dict[str, str]) -> None:
        """Queue on `pipe` the removal of an open run's entries (a run deleted unstarted)."""
        name, status = fields.get("workflowType", ""), fields.get("status", "")
        pipe.zrem(RUNS_INDEX, run_id)
        pipe.zrem(runs_by_status(status), run_id)
        pipe.zrem(runs_by_workflow(name), run_id)
        pipe.zrem(runs_by_workflow_status(name, status), run_id)
        if fields.get("correlationId"):
            pipe.zrem(runs_by_correlation(fields["correlationId"]), run_id)


def _index_of(query: RunQuery) -> tuple[str, bool]:
    """The sorted set that answers a query, and whether its entries all match it."""
    if query.correlation_id:
        return runs_by_correlation(query.correlation_id), not (query.status or query.workflow)
    if query.workflow and query.status:
        return runs_by_workflow_status(query.workflow, query.status), True
    if query.workflow:
        return runs_by_workflow(query.workflow), True
    if query.status:
        return runs_by_status(query.status), True
    return RUNS_INDEX, True


def _matches(record: dict[str, str], query: RunQuery) -> bool:
    """Whether a record matches the filters its set does not already answer."""
    if query.status and record.get("status") != query.status:
        return False
    if query.workflow and record.get("workflowType") != query.workflow:
        return False
    return not (query.correlation_id and record.get("correlationId") != query.correlation_id)
