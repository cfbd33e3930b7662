"""Member encodings: every dense-array path and the npz reader round-trip bit-exactly."""

import io

import numpy as np
import pytest
import torch
from data_testkit import assert_same_sample, make_sample

from hydranet.data import codec


@pytest.mark.parametrize("array, path", [
    (np.array([[0, 1], [1, 0]], np.uint8), "packed"),                        # 1 bit
    (np.arange(30, dtype=np.uint8).reshape(3, 10) % 4, "packed"),            # 2 bits, size not a multiple of 4
    (np.arange(77, dtype=np.uint8).reshape(7, 11) % 12, "packed"),           # 4 bits, odd size
    (np.arange(256, dtype=np.uint8).reshape(16, 16), "array"),               # needs all 8 bits
    (np.array([[1.5, -0.0], [np.inf, np.nan]], np.float32), "shuffled"),
    (np.linspace(-1e300, 1e300, 9), "shuffled"),                             # float64
    (np.array([1, 2, 3], np.float16), "shuffled"),
    (np.array([0, 5, 40000], np.int32), "narrowed"),                        # -> uint16
    (np.array([[0, 7], [255, 1]], np.int64), "narrowed"),                   # -> uint8
    (np.array([-1, 3], np.int32), "array"),                                  # negative: kept as is
    (np.zeros((0, 4), np.float32), "array"),                                 # empty
    (np.array([True, False]), "array"),
])
def test_dense_array_round_trip(array, path):
    entries = codec.encode_array(array)
    assert path in entries
    back = codec.decode_array(codec.read_npz(codec.write_npz(entries)))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()
    assert back.flags.writeable


def test_read_npz_falls_back_to_numpy_for_foreign_files():
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(5), b=np.eye(2))  # zip64 local headers: not our fast path
    out = codec.read_npz(buf.getvalue())
    assert out["a"].tolist() == [0, 1, 2, 3, 4] and out["b"].tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize("compress", [True, False])
def test_an_npz_entry_whose_bytes_fail_its_crc_is_an_error_naming_it(compress):
    """Before: the fast reader trusted the entry's bytes (a sample's CRC covers them in a shard, but read_npz has
    other callers); a stored entry with one flipped byte decoded to a wrong array."""
    data = bytearray(codec.write_npz({"x": np.arange(64, dtype=np.uint8)}, compress=compress))
    name_len = int.from_bytes(data[26:28], "little")
    if compress:  # a CRC field that no longer matches the (intact) deflated bytes
        data[14] ^= 0xFF
    else:  # a flipped byte in the stored array itself (the .npy header is 128 bytes)
        data[30 + name_len + 128 + 5] ^= 0x01
    with pytest.raises(ValueError, match=r"npz entry 'x\.npy': CRC-32 mismatch .* the bytes are damaged"):
        codec.read_npz(bytes(data))


@pytest.mark.parametrize("compress", [True, False])
def test_an_npz_with_a_damaged_header_or_cut_short_is_an_error_not_fewer_arrays(compress):
    """Before: the reader stopped at the first header that was not one and returned the entries read so far."""
    data = codec.write_npz({"a": np.arange(8), "b": np.ones(3), "c": np.zeros(2)}, compress=compress)
    second = data.find(b"PK\x03\x04", 4)
    with pytest.raises(ValueError, match=r"npz damaged or cut short after entry 1 \('a'\)"):
        codec.read_npz(data[:second])
    damaged = bytearray(data)
    damaged[second + 1] ^= 0xFF
    with pytest.raises(ValueError, match=r"npz damaged or cut short after entry 1"):
        codec.read_npz(bytes(damaged))
    assert sorted(codec.read_npz(data)) == ["a", "b", "c"]


@pytest.mark.parametrize("compress", [True, False])
def test_an_entry_name_damaged_in_its_local_header_is_an_error(compress):
    """Before: a flipped bit in a local header's name returned the array under another key ('b' read as 'c'); zipfile
    (np.load) refuses a name that differs from the central directory's, and so does the fast reader now."""
    data = bytearray(codec.write_npz({"a": np.arange(8), "b": np.ones(3)}, compress=compress))
    second = data.find(b"PK\x03\x04", 4)
    assert data[second + 30:second + 35] == b"b.npy"
    data[second + 30] = ord("c")
    with pytest.raises(ValueError, match=r"npz damaged: entry 'c\.npy' is 'b\.npy' in its central directory"):
        codec.read_npz(bytes(data))


def test_a_damaged_deflate_stream_is_a_value_error_naming_the_entry():
    data = bytearray(codec.write_npz({"x": np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8)}))
    start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
    data[start:start + 16] = bytes(16)
    with pytest.raises(ValueError, match=r"npz entry 'x\.npy': (the deflated bytes are damaged|CRC-32 mismatch)"):
        codec.read_npz(bytes(data))


def test_npz_bytes_are_deterministic():
    arrays = {"x": np.arange(10, dtype=np.float32)}
    assert codec.write_npz(arrays) == codec.write_npz(dict(arrays))


@pytest.mark.parametrize("image_format", ["npz", "png"])
def test_sample_round_trip_and_label_subset(image_format):
    s = make_sample(3, drop=("depth", "traffic_light"))
    members = dict(codec.encode_sample(s, image_format))
    assert f"cam.main.{image_format}" in members
    assert "depth.npz" not in members and "traffic_light.npz" not in members
    assert_same_sample(s, codec.decode_sample(members))
    only = codec.decode_sample(members, labels={"drivable", "objects3d", "depth"})
    assert sorted(only.labels) == ["drivable", "objects3d"]


def test_encode_rejects_bad_labels_naming_them():
    s = make_sample(0)
    s.labels["objects3d"] = {"boxes": [1, 2, 3]}
    with pytest.raises(codec.CodecError, match="objects3d.*boxes"):
        codec.encode_sample(s)
    s = make_sample(0)
    s.labels["drivable"] = torch.zeros(2, 2, dtype=torch.uint8)  # wrong shape for a camera map
    with pytest.raises(codec.CodecError, match="drivable"):
        codec.encode_sample(s)


def test_decode_names_missing_and_broken_members():
    members = dict(codec.encode_sample(make_sample(1)))
    del members["cam.rear.npz"]
    with pytest.raises(codec.CodecError, match="cam.rear.npz.*missing"):
        codec.decode_sample(members)
    members = dict(codec.encode_sample(make_sample(1)))
    members["depth.npz"] = b"PK\x03\x04 definitely not a zip"
    with pytest.raises(codec.CodecError, match="depth.npz"):
        codec.decode_sample(members)
