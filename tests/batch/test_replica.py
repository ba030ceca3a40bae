"""The replica's failure isolation, driven through the real engine with injected faults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from acestep_batch.model.pipeline import EngineConfig
from acestep_batch.model.request import GenerationRequest
from acestep_batch.replica import AceStepReplica, ReplicaConfig, is_out_of_memory


def _requests() -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"loop {i}", duration=1.0 + 0.2 * i, seed=i, steps=2) for i in range(4)]


def test_out_of_memory_batches_are_split_and_still_render_every_item(tiny_checkpoint: Path) -> None:
    replica = AceStepReplica(ReplicaConfig(engine=EngineConfig(checkpoint=str(tiny_checkpoint))))
    reference = [replica.render([request])[0].result.audio for request in _requests()]
    real_generate = replica.pipeline.generate
    seen: list[int] = []

    def generate_with_small_memory(requests, **kwargs):  # a device that fits two items at most
        seen.append(len(requests))
        if len(requests) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(requests, **kwargs)

    replica.pipeline.generate = generate_with_small_memory
    outcomes = replica.render(_requests())
    assert seen == [4, 2, 2]
    assert [o.error for o in outcomes] == [None] * 4 and [o.batch_size for o in outcomes] == [2] * 4
    for outcome, expected in zip(outcomes, reference):
        np.testing.assert_allclose(outcome.result.audio.numpy(), expected.numpy(), atol=1e-4)


def test_a_failing_item_is_isolated_from_its_batch(tiny_checkpoint: Path) -> None:
    replica = AceStepReplica(ReplicaConfig(engine=EngineConfig(checkpoint=str(tiny_checkpoint))))
    real_generate = replica.pipeline.generate

    def generate_failing_on_seed_2(requests, **kwargs):
        if any(r.seed == 2 for r in requests):
            raise ValueError("boom on seed 2")
        return real_generate(requests, **kwargs)

    replica.pipeline.generate = generate_failing_on_seed_2
    outcomes = replica.render(_requests())
    assert [o.error is None for o in outcomes] == [True, True, False, True]
    assert "boom on seed 2" in outcomes[2].error and outcomes[2].result is None
    assert all(o.result.audio.shape[0] == 2 for o in outcomes if o.error is None)


def test_out_of_memory_detection() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_writer_columns_are_the_reserved_columns() -> None:
    """Every metadata column the writer owns is reserved in the manifest schema (so a user column
    of that name is rejected up front rather than silently overwritten), and vice versa."""
    from acestep_batch.batch.writer import METADATA_TYPES
    from acestep_batch.manifest.schema import RESERVED_COLUMNS
    from acestep_batch.model.request import GENERATION_FIELDS

    assert set(METADATA_TYPES) - set(GENERATION_FIELDS) - {"id", "format"} == set(RESERVED_COLUMNS)
