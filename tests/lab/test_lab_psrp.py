"""The lab's PSRP send side (hma_lab.psrp): what it writes without psrpcore's copies is what psrpcore writes."""

from __future__ import annotations

import os
import uuid

import pytest
from psrpcore._payload import PSRPMessage, create_message
from psrpcore.types import PSRPMessageType

from hma_lab.psrp import FRAGMENT_BYTES, _ServerPool
from hma_lab.psvalues import Serialized


def _drain(pool, amount):
    payloads = []
    while (payload := pool.data_to_send(amount)) is not None:
        payloads.append((payload.data, payload.pipeline_id, payload.stream_type))
    return payloads


@pytest.mark.parametrize("sizes", [(0,), (10,), (FRAGMENT_BYTES - 61,), (FRAGMENT_BYTES - 60,), (40_000,),
                                   (116_000, 300), (5, 70_000, 33_000, 1)])
@pytest.mark.parametrize("amount", [FRAGMENT_BYTES, 22, 1000, None])
def test_serialized_objects_go_out_in_the_fragments_psrpcore_packs(sizes, amount):
    lean = _ServerPool(application_private_data={})
    reference = _ServerPool(application_private_data={})
    reference.runspace_pool_id = lean.runspace_pool_id
    pipeline = uuid.uuid4()
    for size in sizes:
        obj = Serialized(os.urandom(size))
        for pool_pipeline in (pipeline, None):
            lean.prepare_message(obj, PSRPMessageType.PipelineOutput, pool_pipeline)
            # what the lab did before: psrpcore's message, psrpcore's fragmenting
            packed = create_message(False, PSRPMessageType.PipelineOutput, bytes(obj), reference.runspace_pool_id,
                                    pool_pipeline)
            reference._send_buffer.append(PSRPMessage(PSRPMessageType.PipelineOutput, bytearray(packed),
                                                      reference.runspace_pool_id, pool_pipeline,
                                                      reference._fragment_counter))
    got, expected = _drain(lean, amount), _drain(reference, amount)
    assert got == expected and all(type(data) is bytes for data, _, _ in got)
    assert not lean._send_buffer


def test_pipelines_run_at_once_on_threads_kept_for_the_next_ones(monkeypatch):
    import threading
    import time
    import weakref

    from hma_lab.psrp import _Workers

    workers = _Workers()
    workers.IDLE_SECONDS = 0.5
    barrier = threading.Barrier(3, timeout=5)
    seen: list[tuple[threading.Thread, str]] = []    # the thread objects: an ident is reused once a thread ends
    done = threading.Semaphore(0)
    released = []

    class Shell:   # what a pipeline's job holds: gone once the job ends, not kept by an idle thread
        pass

    def job(tag, shell=None):
        seen.append((threading.current_thread(), threading.current_thread().name))
        if tag == "fail":
            raise RuntimeError("a lab bug")
        if tag == "together":
            barrier.wait()   # three pipelines at once: none waits for another to end
        done.release()

    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: (failures.append(args.exc_value), done.release()))
    for n in range(3):
        workers.run(job, ("together",), f"lab-pipeline-{n}")
    for _ in range(3):
        assert done.acquire(timeout=5)
    first = {thread for thread, _ in seen}
    assert len(first) == 3 and sorted(name for _, name in seen) == [f"lab-pipeline-{n}" for n in range(3)]
    workers.run(job, ("fail",), "lab-pipeline-fail")
    assert done.acquire(timeout=5) and str(failures[0]) == "a lab bug"
    shell = Shell()
    weakref.finalize(shell, released.append, True)
    workers.run(job, ("alone", shell), "lab-pipeline-again")
    del shell
    assert done.acquire(timeout=5)
    assert {thread for thread, _ in seen[3:]} <= first and seen[-1][1] == "lab-pipeline-again"
    deadline = time.monotonic() + 5
    while not released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert released and workers._idle    # the job's objects are freed while its thread waits for the next

    def alive():
        return [thread for thread in threading.enumerate() if thread in first]
    while (workers._idle or alive()) and time.monotonic() < deadline:   # idle threads end after IDLE_SECONDS
        time.sleep(0.05)
    assert not workers._idle and not alive()
