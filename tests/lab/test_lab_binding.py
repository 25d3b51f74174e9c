"""The lab's cmdlet layer: a call's answer and its latency (hma_lab.binding.answer_call)."""

from __future__ import annotations

import threading
import time

import pytest

from hma_lab import binding, errors
from hma_lab.psrp import Invocation, Stopped
from hma_lab.scenario import Fault


def invocation(written: list, slept: list, stop: threading.Event | None = None, began: float | None = None) -> Invocation:
    class Recorded(Invocation):
        def sleep(self, seconds: float) -> None:
            written.append(("sleep", None))
            slept.append(seconds)
            super().sleep(min(seconds, 0))   # raises Stopped as a real sleep would, without the wait

    return Recorded(user="CONTOSO\\hma-reader", configuration="Microsoft.Exchange", commands=[],
                    write_output=lambda value: written.append(("output", value)),
                    write_error=lambda record: written.append(("error", record)),
                    write_warning=lambda text: written.append(("warning", text)),
                    break_pool=lambda reason: None, stop_event=stop or threading.Event(),
                    began=time.monotonic() if began is None else began)


def failure(message: str, terminating: bool) -> errors.CmdletError:
    record = errors.error_record(message, exception_type="System.Exception", category=errors.ErrorCategory.NotSpecified,
                                 reason="Exception", fqid="LabTest")
    return errors.CmdletError(record, terminating=terminating)


def test_the_cmdlets_own_work_counts_in_its_latency_and_nothing_goes_out_before_it():
    written: list = []
    slept: list = []
    late = failure("a terminating error after two objects", terminating=True)

    def produce(holding: Invocation):
        holding.write_warning("the result was truncated")     # as Get-Mailbox warns while it works
        time.sleep(0.05)                                       # the cmdlet's own work
        yield "first"
        yield failure("a non-terminating error", terminating=False)
        yield "second"
        raise late

    with pytest.raises(errors.CmdletError) as raised:
        binding.answer_call(invocation(written, slept), 0.2, None, lambda fault: late, produce)
    assert raised.value is late
    assert [kind for kind, _ in written] == ["sleep", "warning", "output", "error", "output"]
    assert [value for kind, value in written if kind == "output"] == ["first", "second"]
    assert slept[0] <= 0.2 - 0.05        # what the work took is not slept again


def test_a_delay_fault_adds_to_the_latency_and_a_stopped_call_writes_nothing():
    written: list = []
    slept: list = []
    stop = threading.Event()
    stop.set()                            # the client stopped the pipeline (Signal ctrl_c) while it ran
    with pytest.raises(Stopped):
        binding.answer_call(invocation(written, slept, stop), 0.1, Fault(effect="delay", value=2.0),
                            lambda fault: failure("x", True), lambda holding: ["never sent"])
    assert 1.5 < slept[0] <= 2.1
    assert written == [("sleep", None)]


def test_other_faults_sleep_the_latency_then_answer_without_running_the_cmdlet():
    written: list = []
    slept: list = []
    ran: list = []
    refused = failure("throttled", terminating=False)
    binding.answer_call(invocation(written, slept), 0.3, Fault(effect="throttle", value=None),
                        lambda fault: refused, lambda holding: ran.append("ran") or [])
    assert len(slept) == 1 and 0 < slept[0] <= 0.3 and ran == []
    assert written == [("sleep", None), ("error", refused.record)]


def test_once_the_latency_has_passed_objects_stream_as_they_are_made():
    """Get-ExchangeServer's long answer reaches the client object by object: the collector queues each server's
    queries as its object arrives."""
    written: list = []
    slept: list = []

    def produce(holding: Invocation):
        yield "first"
        assert written[-1] == ("output", "first")      # out before the next object is made
        yield "second"

    binding.answer_call(invocation(written, slept), 0.0, None, lambda fault: failure("x", True), produce)
    assert written == [("sleep", None), ("output", "first"), ("output", "second")]


def test_the_latency_runs_from_when_the_call_began_not_from_when_a_lab_thread_got_to_it():
    written: list = []
    slept: list = []
    began = time.monotonic() - 0.5     # the Command arrived half a second ago (a busy lab, a queued runspace)
    binding.answer_call(invocation(written, slept, began=began), 0.3, None, lambda fault: failure("x", True),
                        lambda holding: ["answer"])
    assert slept[0] <= 0 and written == [("sleep", None), ("output", "answer")]


def test_a_handler_that_fails_at_once_still_answers_after_the_latency():
    """Exchange's handlers return lists: their work, and a terminating error (an invalid -Filter), happen in the one
    call; the error goes out when the latency has passed, as an answer would."""
    written: list = []
    slept: list = []
    refused = failure("Cannot bind parameter 'Filter'", terminating=True)

    def produce(holding: Invocation) -> list:
        raise refused

    with pytest.raises(errors.CmdletError) as raised:
        binding.answer_call(invocation(written, slept), 0.5, None, lambda fault: refused, produce)
    assert raised.value is refused
    assert written == [("sleep", None)] and 0.4 < slept[0] <= 0.5
