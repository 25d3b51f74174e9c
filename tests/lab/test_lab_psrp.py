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

