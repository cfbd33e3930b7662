"""Task scheduler: sampling frequencies per mode, presence-respecting index lists, determinism,
resume, and the rank slicing that makes DDP equal one process."""

import numpy as np
import pytest

from hydranet.train.scheduler import ALL, SchedulerBatchSampler, TaskScheduler, build_index_lists, label_presence

SIZES = {"a": 400, "b": 100, "c": 25}


def lists() -> dict[str, np.ndarray]:
    out, start = {}, 0
    for t, n in SIZES.items():
        out[t] = np.arange(start, start + n)
        start += n
    return out


def frequencies(kind: str, steps: int = 6000, **kw) -> dict[str, float]:
    s = TaskScheduler(lists(), kind, seed=3, **kw)
    counts = {t: 0 for t in SIZES}
    for _ in range(steps):
        counts[s.next(1)[0]] += 1
    return {t: c / steps for t, c in counts.items()}


def test_round_robin_cycles():
    s = TaskScheduler(lists(), "round_robin")
    assert [s.next(2)[0] for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


@pytest.mark.parametrize("kind,temperature", [("proportional", 1.0), ("temperature", 2.0), ("temperature", 50.0)])
def test_sampling_frequencies(kind, temperature):
    n = np.array(list(SIZES.values()), dtype=float)
    expected = n / n.sum() if kind == "proportional" else n ** (1 / temperature) / (n ** (1 / temperature)).sum()
    got = frequencies(kind, temperature=temperature)
    np.testing.assert_allclose(list(got.values()), expected, atol=0.02)
    s = TaskScheduler(lists(), kind, temperature=temperature)
    np.testing.assert_allclose(list(s.frequencies().values()), expected)


def test_batches_only_hold_the_tasks_samples_and_cover_each_epoch():
    s = TaskScheduler(lists(), "round_robin", seed=1)
    seen = {t: [] for t in SIZES}
    for _ in range(3 * 25):  # 25 draws of 4 per task = one epoch of b (100), four of c (25)
        t, idx = s.next(4)
        assert set(idx) <= set(lists()[t].tolist())
        seen[t] += idx
    assert sorted(seen["b"]) == list(range(400, 500))  # one full permutation, no repeats
    assert sorted(seen["c"]) == sorted(list(range(500, 525)) * 4)


def test_deterministic_and_resumable():
    a = TaskScheduler(lists(), "temperature", seed=7)
    first = [a.next(3) for _ in range(20)]
    state = a.state_dict()
    rest = [a.next(3) for _ in range(20)]
    b = TaskScheduler(lists(), "temperature", seed=7)
    assert [b.next(3) for _ in range(20)] == first
    c = TaskScheduler(lists(), "temperature", seed=7)
    c.load_state_dict(state)
    assert [c.next(3) for _ in range(20)] == rest
    other_seed = TaskScheduler(lists(), "temperature", seed=8)
    assert [other_seed.next(3) for _ in range(20)] != first
    with pytest.raises(ValueError, match="does not match"):
        other_seed.load_state_dict(state)


def test_rank_slices_partition_the_global_batch():
    s = TaskScheduler(lists(), "proportional", seed=0)
    full = list(SchedulerBatchSampler(s, 4, 0, 1, 10))
    r0 = list(SchedulerBatchSampler(s, 2, 0, 2, 10))
    r1 = list(SchedulerBatchSampler(s, 2, 1, 2, 10))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == full
    assert s.micro_step == 0  # the sampler iterates a copy; the trainer's scheduler is untouched


def test_index_lists_respect_presence_and_caps():
    class DS:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            class S:
                labels = {"depth": 1} if i % 2 else {"lanes": 1}
            return S()

    presence = label_presence(DS(), ["depth", "lanes"])
    assert presence["depth"].tolist() == [i % 2 == 1 for i in range(10)]
    idx = build_index_lists(presence, {"depth": "depth", "lanes": "lanes"}, {}, {"lanes": 3}, seed=0)
    assert idx["depth"].tolist() == [1, 3, 5, 7, 9]
    assert len(idx["lanes"]) == 3 and all(i % 2 == 0 for i in idx["lanes"])
    s = TaskScheduler(idx, "all", num_samples=10)
    assert s.tasks == [ALL] and len(s.lists[ALL]) == 8
    with pytest.raises(ValueError, match="no training samples carry"):
        TaskScheduler({"depth": np.array([], dtype=np.int64)}, "round_robin")
