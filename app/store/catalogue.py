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
