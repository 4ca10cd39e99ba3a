"""The RAM tier against a model: LRU order, byte bound, per-file drops."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cachefs.chunks import ChunkKey
from cachefs.origin import FileVersion
from cachefs.tiers import RamTier

MAX = 1000
VERSIONS = [FileVersion(1, ino, 10_000, 5) for ino in range(3)]
keys = st.builds(ChunkKey, st.sampled_from(VERSIONS), st.just(100), st.integers(0, 20))


class RamTierModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tier = RamTier(MAX)
        self.model: OrderedDict[ChunkKey, bytes] = OrderedDict()

    @rule(key=keys, size=st.integers(0, 400))
    def put(self, key: ChunkKey, size: int) -> None:
        data = bytes([key.index % 256]) * size
        self.tier.put(key, data)
        self.model.pop(key, None)
        self.model[key] = data
        while sum(map(len, self.model.values())) > MAX:
            self.model.popitem(last=False)

    @rule(key=keys)
    def get(self, key: ChunkKey) -> None:
        assert self.tier.get(key) == self.model.get(key)
        if key in self.model:
            self.model.move_to_end(key)

    @rule(version=st.sampled_from(VERSIONS))
    def drop_file(self, version: FileVersion) -> None:
        self.tier.drop_file((version.dev, version.ino))
        for key in [k for k in self.model if k.version == version]:
            del self.model[key]

    @invariant()
    def bounded_and_equal(self) -> None:
        assert self.tier.bytes <= MAX
        assert self.tier.bytes == sum(map(len, self.model.values()))
        assert len(self.tier) == len(self.model)


TestRamTierModel = RamTierModel.TestCase


@settings(max_examples=50)
@given(st.integers(1, 5000))
def test_oversized_chunk_is_refused(size: int) -> None:
    tier = RamTier(MAX)
    key = ChunkKey(VERSIONS[0], 100, 0)
    assert tier.put(key, b"x" * size) == (size <= MAX)
    assert tier.bytes <= MAX
