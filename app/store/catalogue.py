"""The run store's catalogue: registered workflow definitions, and published events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.store.base import StoreBase
from app.store.keys import (
    EVENT_STREAM_LENGTH,
    WORKFLOWS_INDEX,
    cancel_events_key,
    event_stream,
    plan_key,
    run_key,
    workflow_key,
)


class Catalogue(StoreBase):
    """The catalogue part of RunStore."""

    def register_workflow(self, name: str, version: int, definition_json: str) -> None:
        """Keep a definition under its name and version (replacing that version)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(workflow_key(name), str(version), definition_json)
        pipe.sadd(WORKFLOWS_INDEX, name)
        self.execute(pipe)

    def workflow_versions(self, name: str) -> dict[str, str]:
        """A registered workflow's definitions by version (JSON text); {} if none."""
        return dict(self.guard(lambda: self.client.hgetall(workflow_key(name))))

    def workflow_names(self) -> list[str]:
        return sorted(self.guard(lambda: self.client.smembers(WORKFLOWS_INDEX)))

    def workflow_catalogue(self) -> dict[str, list[int]]:
        """Every registered workflow name with its versions, in one round trip."""
        names = self.workflow_names()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hkeys(workflow_key(name))
        return {name: sorted(int(v) for v in versions)
                for name, versions in zip(names, self.execute(pipe), strict=True)}

    def put_plan_pieces(self, digest: str, outline: str, pieces: Mapping[str, str]) -> None:
        """Keep a plan's outline and its pieces (name -> text) for the retention
        (app.compiler.pieces).

        They are a copy of what the definition holds, read in its place: one that expired is
        written again from the definition by whoever misses it (app.runtime.state).
        """
        key = plan_key(digest)
        # not a transaction: the pieces of a digest never change, and the outline is
        # written last, so a reader who finds it finds them too
        pipe = self.client.pipeline(transaction=False)
        for chunk in _chunks(pieces, _PIECES_A_COMMAND):
            pipe.hset(f"{key}:tasks", mapping=chunk)
        pipe.expire(f"{key}:tasks", self.retention)
        pipe.set(key, outline, ex=self.retention)
        self.execute(pipe)

    def keep_plan_pieces(self, digest: str) -> bool:
        """Start a plan's pieces' retention again; False if they are not (all) there."""
        key = plan_key(digest)
        pipe = self.client.pipeline(transaction=True)
        pipe.expire(key, self.retention)
        pipe.expire(f"{key}:tasks", self.retention)
        return all(self.execute(pipe))

    def get_plan_outline(self, digest: str) -> str | None:
        value = self.guard(lambda: self.client.get(plan_key(digest)))
        return str(value) if value is not None else None

    def get_plan_pieces(self, digest: str, names: Sequence[str]) -> list[str | None]:
        """The named pieces of a plan (None for one not there), keeping them for the
        retention from now: a run that goes on reading them keeps them."""
        key = f"{plan_key(digest)}:tasks"
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(key, list(names))
        pipe.expire(key, self.retention)
        pipe.expire(plan_key(digest), self.retention)
        values = self.execute(pipe)[0]
        return [str(v) if v is not None else None for v in values]

    def publish_event(self, sink: str, fields: Mapping[str, Any]) -> tuple[str, str]:
        """Append an event to its sink's stream; returns (stream, event id)."""
        stream = event_stream(sink)
        entry: dict[Any, Any] = dict(fields)
        event_id = self.guard(lambda: self.client.xadd(
            stream, entry, maxlen=EVENT_STREAM_LENGTH, approximate=True))
        return stream, str(event_id)

    def cancelled_steps(self, run_id: str) -> set[str]:
        """Refs of the steps the run's end cancelled whose onCancelled is not published."""
        return {str(ref) for ref in
                self.guard(lambda: self.client.smembers(cancel_events_key(run_id)))}

    def publish_cancelled(self, run_id: str, ref: str,
                          entries: Sequence[tuple[str, Mapping[str, str]]]) -> bool:
        """Publish a cancelled step's events, (sink, fields) each, and take it off the run's
        cancelled steps, in one call; False (nothing published) if another call took it."""
        keys, args = [run_key(run_id)], [ref]
        for sink, fields in entries:
            keys.append(event_stream(sink))
            args.append(str(2 * len(fields)))
            for name, value in fields.items():
                args += [name, value]
        return bool(self.call("publish_cancelled", keys, args))


# One HSET of a 100,000-task plan's pieces would be a 10 MB command that blocks Redis while
# it runs; a few hundred pieces a command let other clients' commands in between.
_PIECES_A_COMMAND = 256


def _chunks(pieces: Mapping[str, str], size: int) -> list[dict[Any, Any]]:
    items = list(pieces.items())
    return [dict(items[i:i + size]) for i in range(0, len(items), size)]
