"""The CPU peak-memory method sees a call's allocations (inputs excluded) and what it frees along the way, whatever
the heap held before."""

from __future__ import annotations

import torch

from attnbench.measure import memory

MiB = 1 << 20


def _peak(call) -> int:
    return memory.measure(call, lambda: torch.randn(1 << 20), "cpu").allocated_bytes  # 4 MiB input


def test_one_large_tensor_is_seen():
    def call(x):
        out = torch.empty(64 * MiB // 4).fill_(1.0)  # 64 MiB, touched
        return out.sum() + x.sum()

    assert 60 * MiB <= _peak(call) <= 72 * MiB


def test_temporaries_freed_in_the_call_are_not_summed():
    """Ten 16 MiB temporaries one after another peak at about two of them, not ten."""

    def call(x):
        total = torch.zeros(())
        for _ in range(10):
            total = total + torch.ones(16 * MiB // 4).sum()
        return total + x.sum()

    assert 12 * MiB <= _peak(call) <= 40 * MiB


def test_many_small_tensors_kept_alive_are_seen():
    """256 tensors of 256 KiB held at once (sizes glibc serves from its heap, not with mmap)."""

    def call(x):
        kept = [torch.ones(64 * 1024) for _ in range(256)]  # 256 KiB each: 64 MiB in all
        return sum(t.sum() for t in kept) + x.sum()

    assert 56 * MiB <= _peak(call) <= 80 * MiB


def test_inputs_are_excluded():
    def call(x):
        return x * 1.0  # a 4 MiB output, the input itself not counted

    assert _peak(call) <= 8 * MiB


def test_heap_memory_freed_before_the_call_does_not_hide_its_allocations():
    """Memory the heap keeps from earlier tensors (resident, free) absorbs the call's allocations: a resident-set
    measurement would not see them, the allocator's own accounting does."""

    def call(x):
        kept = [torch.ones(64 * 1024) for _ in range(256)]  # 64 MiB in 256 KiB tensors
        return sum(t.sum() for t in kept) + x.sum()

    earlier = [torch.ones(64 * 1024) for _ in range(512)]  # 128 MiB through the heap, then freed
    del earlier
    assert 56 * MiB <= memory.measure(call, lambda: torch.randn(16), "cpu").allocated_bytes <= 80 * MiB
