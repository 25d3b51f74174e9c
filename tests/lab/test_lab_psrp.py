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


def _create_pipeline_xml(commands):
    from types import SimpleNamespace

    from pypsrp.complex_objects import ApartmentState

    from hma_check.collect.psrp_wire import pypsrp_create_pipeline

    pool = SimpleNamespace(apartment_state=ApartmentState.UNKNOWN, host=None, protocol_version="2.3")
    return pypsrp_create_pipeline(pool, commands)


_ODD = (b'<Obj RefId="0"><MS><Obj N="PowerShell"><S N="PowerShell">x</S></Obj><MS><Obj N="Other"><MS /></Obj>'
        b'<Obj N="PowerShell"><MS><I32 N="ExtraCmds">1</I32><Nil N="ExtraCmds" /><Obj N="Cmds"><LST><Obj><MS>'
        b'<B N="Cmd">x</B><S N="Cmd">Get-A</S><Obj N="Args"><LST><Obj><MS><S N="V">1</S><S N="N">n</S></MS></Obj>'
        b'</LST></Obj></MS></Obj></LST></Obj></MS></Obj><Obj N="PowerShell"><MS /></Obj></MS></MS></Obj>')


@pytest.mark.parametrize("xml", [
    _create_pipeline_xml((("Get-Mailbox", (("Identity", "a<b"), ("ResultSize", "Unlimited"), ("Force", None),
                                           ("Count", 5), ("List", ["x", "y"]))), ("Select-Object", ()))),
    _create_pipeline_xml((("Get-OwaVirtualDirectory", (("Server", "EX001"),)),)),
    _ODD,
])
def test_the_create_pipeline_reader_finds_what_elementpath_finds(xml):
    """psrp._select walks the CreatePipeline paths without ElementPath: same elements, same order."""
    import xml.etree.ElementTree as ET

    from hma_lab.psrp import _select

    root = ET.fromstring(xml)
    paths = {"MS/Obj[@N='PowerShell']/MS": (("MS", None), ("Obj", "PowerShell"), ("MS", None)),
             "*[@N='ExtraCmds']": (("*", "ExtraCmds"),),
             "Obj[@N='Cmds']/LST/Obj/MS": (("Obj", "Cmds"), ("LST", None), ("Obj", None), ("MS", None)),
             "S[@N='Cmd']": (("S", "Cmd"),), "B[@N='IsScript']": (("B", "IsScript"),),
             "Obj[@N='Args']/LST/Obj/MS": (("Obj", "Args"), ("LST", None), ("Obj", None), ("MS", None)),
             "*[@N='N']": (("*", "N"),), "*[@N='V']": (("*", "V"),)}
    checked = 0
    for node in root.iter():
        for path, steps in paths.items():
            expected = node.findall(path)
            assert list(_select(node, steps)) == expected, path
            checked += len(expected)
    assert checked > 5


def test_pipelines_run_at_once_on_threads_kept_for_the_next_ones(monkeypatch):
    import threading
    import time

    from hma_lab.psrp import _Workers

    workers = _Workers()
    workers.IDLE_SECONDS = 0.5
    barrier = threading.Barrier(3, timeout=5)
    seen: list[tuple[int, str]] = []
    done = threading.Semaphore(0)

    def job(tag):
        seen.append((threading.get_ident(), threading.current_thread().name))
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
    first = {ident for ident, _ in seen}
    assert len(first) == 3 and sorted(name for _, name in seen) == [f"lab-pipeline-{n}" for n in range(3)]
    workers.run(job, ("fail",), "lab-pipeline-fail")
    assert done.acquire(timeout=5) and str(failures[0]) == "a lab bug"
    workers.run(job, ("alone",), "lab-pipeline-again")
    assert done.acquire(timeout=5)
    assert {ident for ident, _ in seen[3:]} <= first and seen[-1][1] == "lab-pipeline-again"
    deadline = time.monotonic() + 5

    def alive():
        return [thread for thread in threading.enumerate() if thread.ident in first]
    while (workers._idle or alive()) and time.monotonic() < deadline:   # idle threads end after IDLE_SECONDS
        time.sleep(0.05)
    assert not workers._idle and not alive()
