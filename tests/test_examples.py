"""Definitions written the way Conductor's documentation teaches, run end to end (level 3).

tests/examples/ holds a saga with a compensating failureWorkflow that reads the failed
execution (`failedWorkflow`), and an approval flow (WAIT completed from outside, SWITCH,
INLINE, SET_VARIABLE, TERMINATE, EVENT). Their HTTP steps call a local stand-in for the
order services, which records every call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final

import pytest

from app import RunStatus, WorkflowRun, register_workflow, submit_workflow
from app.runtime.state import get_store
from tests.support import baton_settings, failure_run, send_json, serving, wait_for

EXAMPLES: Final = Path(__file__).parent / "examples"


@dataclass
class OrderServices:
    """The stand-in's address and the calls it answered, as (path, body)."""

    url: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def paths(self, order_id: str) -> list[str]:
        return [path for path, body in self.calls if body.get("orderId") == order_id]


@pytest.fixture(scope="module")
def services() -> Iterator[OrderServices]:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            calls.append((self.path, body))
            order = str(body.get("orderId"))
            if self.path == "/shipping/book" and order.startswith("unshippable"):
                send_json(self, 503, {"error": "no carrier"})
                return
            kind = self.path.strip("/").split("/")[0]
            send_json(self, 200, {"reservation": f"r-{order}", "payment": f"p-{order}",
                                  "shipment": f"s-{order}", "service": kind})

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url, \
            baton_settings(http_allow=url.removeprefix("http://")):  # loopback is refused
        yield OrderServices(url, calls)


def statuses(run: WorkflowRun) -> dict[str, str]:
    return {ref: step.status.value for ref, step in run.steps.items()}


def test_a_saga_that_completes_runs_no_compensation(worker: Any,
                                                     services: OrderServices) -> None:
    register_workflow(EXAMPLES / "order_saga_undo.json")
    run = submit_workflow(EXAMPLES / "order_saga.json",
                          input={"api": services.url, "orderId": "o-1", "amount": 40})

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    assert run.output == {"orderId": "o-1", "reservation": "r-o-1", "payment": "p-o-1",
                          "shipment": "s-o-1"}
    assert services.paths("o-1") == ["/stock/reserve", "/payments/take", "/shipping/book"]


def test_a_failed_saga_is_compensated_from_its_failed_execution(
    worker: Any, services: OrderServices
) -> None:
    register_workflow(EXAMPLES / "order_saga_undo.json")
    order = "unshippable-2"
    run = submit_workflow(EXAMPLES / "order_saga.json",
                          input={"api": services.url, "orderId": order, "amount": 40})

    assert run.wait(timeout=60) is RunStatus.FAILED
    assert statuses(run) == {"reserve_stock": "COMPLETED", "take_payment": "COMPLETED",
                             "book_shipping": "FAILED"}
    assert run.steps["book_shipping"].attempts == 2  # its retryCount of 1

    undo = failure_run(run, "order_saga_undo")
    assert undo.wait(timeout=60) is RunStatus.COMPLETED
    assert undo.output == {
        "orderId": order, "undid": {"orderId": order, "refund": True, "release": True},
        "failedRun": run.id, "failedAt": ["book_shipping"]}
    assert statuses(undo) == {
        "completed": "COMPLETED", "refund_if_paid": "COMPLETED",
        "refund_payment": "COMPLETED", "release_if_reserved": "COMPLETED",
        "release_stock": "COMPLETED"}
    # undone latest first, each once; the refund says why
    assert services.paths(order) == [
        "/stock/reserve", "/payments/take", "/shipping/book", "/shipping/book",
        "/payments/refund", "/stock/release"]
    refund = next(body for path, body in services.calls
                  if path == "/payments/refund" and body["orderId"] == order)
    assert refund["reason"] == undo.record()["input"]["reason"] != ""


def _decided(verdict: str, by: str, order: str, amount: int) -> WorkflowRun:
    """A run of order_approval whose approval step was completed with `verdict`."""
    run = submit_workflow(EXAMPLES / "order_approval.json",
                          input={"orderId": order, "amount": amount})
    wait_for(lambda: "approval" in run.steps
             and run.steps["approval"].status.value == "IN_PROGRESS",
             timeout=30, what="the approval step to wait")
    run.complete_step("approval", {"verdict": verdict, "by": by})
    return run


def test_an_approved_order_is_counted_and_announced(worker: Any) -> None:
    run = _decided("approved", "ada", "o-3", 250)

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    assert run.output == {"orderId": "o-3", "approved": True, "approvals": 1, "large": True}
    assert statuses(run) == {
        "note_order": "COMPLETED", "approval": "COMPLETED", "decide": "COMPLETED",
        "count_approval": "COMPLETED", "remember_approval": "COMPLETED",
        "announce": "COMPLETED"}
    produced = run.steps["announce"].output
    assert produced["event_produced"] == "baton:events:conductor:order-status"
    [(_, event)] = get_store().client.xrange(produced["event_produced"],
                                             produced["eventId"], produced["eventId"])
    assert event["workflowId"] == run.id
    assert json.loads(event["payload"]) == \
        {"orderId": "o-3", "status": "approved", "by": "ada", "eventVersion": 1}


def test_a_rejected_order_is_terminated_with_its_reason(worker: Any) -> None:
    run = _decided("rejected", "grace", "o-4", 5)

    assert run.wait(timeout=60) is RunStatus.TERMINATED
    assert run.output == {"orderId": "o-4", "approved": False}
    assert run.record()["reasonForIncompletion"] == "order rejected by grace"
    assert "announce" not in run.steps and "count_approval" not in run.steps
