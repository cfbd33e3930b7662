"""Bounded hypothesis fuzz of the two parsers that read untrusted bytes: ``decode_sample`` (a sample's tar
members) and the shard manifest (``read_manifest`` + ``ShardDataset``). Whatever the input, the only exception
that may escape is ``CodecError`` / ``ShardError`` -- never KeyError, TypeError, OSError, ...
Derandomized and small, so the suite stays fast and a failure reproduces."""

import json
import math
import shutil

import pytest
from data_testkit import make_sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydranet.data.array_codec import CodecError
from hydranet.data.codec import decode_sample, encode_sample
from hydranet.data.sample import collate
from hydranet.data.shards import ShardDataset, ShardError, ShardWriter
from hydranet.geometry import BevGrid
from hydranet.setup import Setup

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)

MEMBERS = dict(encode_sample(make_sample(3, height=8, width=16, cams=2)))


def paths(obj, prefix=()):
    """Every (path) into a JSON document, containers included."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def set_path(doc, path, value):
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


@st.composite
def mutated_members(draw):
    members = dict(MEMBERS)
    kind = draw(st.sampled_from(["json", "json_delete", "bytes", "truncate", "drop", "garbage"]))
    name = draw(st.sampled_from(sorted(members)))
    if kind.startswith("json"):
        doc = json.loads(members["sample.json"])
        path = draw(st.sampled_from(list(paths(doc))))
        if kind == "json_delete" and path:
            parent = doc
            for p in path[:-1]:
                parent = parent[p]
            del parent[path[-1]]
        else:
            doc = set_path(doc, path, draw(JSON))
        members["sample.json"] = json.dumps(doc).encode()
    elif kind == "bytes":
        data = bytearray(members[name])
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        members[name] = bytes(data)
    elif kind == "truncate":
        members[name] = members[name][:draw(st.integers(0, len(members[name]) - 1))]
    elif kind == "drop":
        del members[name]
    else:
        members[name] = draw(st.binary(max_size=64))
    return members


@FUZZ
@given(mutated_members())
def test_decode_sample_raises_only_codec_errors(members):
    try:
        sample = decode_sample(members)
    except CodecError:
        return
    # Whatever decodes is a valid sample that collates: "frame_index": "abc" decoded before and crashed in collate.
    sample.validate()
    assert isinstance(sample.scene_id, str) and type(sample.frame_index) is int
    assert math.isfinite(sample.timestamp)
    collate([sample])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_ds")
    with ShardWriter(root, 2, setup=Setup(image_size=(8, 16), grid=BevGrid(cell=4.0))) as w:
        for i in range(3):
            w.write(make_sample(i, height=8, width=16))
    return root


@FUZZ
@given(data=st.data())
def test_manifest_parser_raises_only_shard_errors(dataset, tmp_path_factory, data):
    doc = json.loads((dataset / "manifest.json").read_text())
    path = data.draw(st.sampled_from([p for p in paths(doc) if p[:1] != ("source",)]))
    if path and data.draw(st.booleans()):
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        del parent[path[-1]]
    else:
        doc = set_path(doc, path, data.draw(JSON))
    root = tmp_path_factory.mktemp("fuzz_case")
    for shard in dataset.glob("shard-*.tar"):
        shutil.copy(shard, root / shard.name)
    (root / "manifest.json").write_text(json.dumps(doc))
    try:
        ds = ShardDataset(root)
        for i in range(len(ds)):
            ds[i]
        ds.close()
    except ShardError:
        pass
