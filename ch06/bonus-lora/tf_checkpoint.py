"""Read TensorFlow checkpoints, the format of OpenAI's GPT-2 release, with NumPy alone.

A checkpoint ``PREFIX`` (OpenAI's is ``model.ckpt``) is an index file ``PREFIX.index`` and data files
``PREFIX.data-00000-of-00001``, ... The data files hold the tensors' raw bytes end to end. The index is a
sorted table in LevelDB's "SSTable" layout that maps each variable name to a small protocol-buffer record:
data type, shape, which data file, byte offset and byte count. Reading both by hand takes a page of code and
means the course needs no TensorFlow to load GPT-2, and a process that trains with PyTorch never imports it
(TensorFlow imported before PyTorch's compiler stack crashes the process on Linux).

Tensors are returned as copy-on-write memory maps of the data file, so loading GPT-2 XL does not hold a second
6 GB copy of its weights in memory. Usage::

    tensors = read_checkpoint("gpt2/124M/model.ckpt")   # {"model/wte": array of shape (50257, 768), ...}

The tests check this reader against checkpoints written by TensorFlow itself: ``write_checkpoint`` (which needs
TensorFlow) runs in a separate process, ``python tf_checkpoint.py write ARRAYS.npz PREFIX [ARRAYS.npz PREFIX ...]``.
"""

import struct
import sys
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57  # last 8 bytes of every SSTable file
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # after each block: 1 byte compression type, 4 bytes checksum

# TensorFlow's DataType enum -> NumPy dtype (the types a model checkpoint plausibly holds).
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 19: np.float16}


class CheckpointError(ValueError):
    """The checkpoint files are truncated, corrupt or of a kind this reader does not handle."""


def _varint(buf, pos):
    """Decode a base-128 varint at ``buf[pos]``; return (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("a number runs past the end of its record")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _protobuf_fields(buf):
    """The (field number, value) pairs of a protocol-buffer message; nested messages stay bytes."""
    pos, fields = 0, []
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:  # varint
            value, pos = _varint(buf, pos)
        elif wire_type == 1:  # 64-bit
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire_type == 2:  # length-delimited: bytes, string or nested message
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type == 5:  # 32-bit
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CheckpointError(f"unknown protocol-buffer wire type {wire_type}")
        if pos > len(buf):
            raise CheckpointError("a record runs past the end of its block")
        fields.append((number, value))
    return fields


def _block(data, handle):
    """The contents of the table block at ``handle`` (offset, size); only uncompressed blocks are handled."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointError(f"a block at byte {offset} runs past the end of the file")
    if data[offset + size] != 0:
        raise CheckpointError(f"block at byte {offset} is compressed (type {data[offset + size]})")
    return data[offset:offset + size]


def _block_entries(block):
    """The (key, value) pairs of a table block; each key stores only what differs from the previous one."""
    if len(block) < 4:
        raise CheckpointError("a block is too short")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (n_restarts + 1)
    if end < 0:
        raise CheckpointError("a block's restart table is larger than the block")
    pos, key, entries = 0, b"", []
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key.decode("utf-8"), block[pos:pos + value_length]))
        pos += value_length
    return entries


def _shape(message):
    """The dimensions in a TensorShapeProto message (field 2, repeated; each dimension's size is its field 1)."""
    return [dict(_protobuf_fields(dim)).get(1, 0) for number, dim in _protobuf_fields(message) if number == 2]


def read_index(index_path):
    """Map each variable name in a ``.index`` file to its record (dtype, shape, shard, offset, size)."""
    data = Path(index_path).read_bytes()
    try:
        if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
            raise CheckpointError("it does not end with the table signature (truncated, or not an index file)")
        footer = data[-FOOTER_SIZE:]
        _, pos = _varint(footer, 0)  # the footer holds two block handles (offset, size): the "meta-index"
        _, start = _varint(footer, pos)  # block, which checkpoints do not use, and the index block
        end = _varint(footer, _varint(footer, start)[1])[1]
        index_handle = footer[start:end]
        records, header = {}, None
        for _, handle in _block_entries(_block(data, index_handle)):
            for name, value in _block_entries(_block(data, handle)):
                fields = dict(_protobuf_fields(value))
                if name == "":  # the header entry: number of data files, byte order
                    header = fields
                    continue
                records[name] = {"dtype": fields.get(1, 0), "shape": _shape(fields.get(2, b"")),
                                 "shard": fields.get(3, 0), "offset": fields.get(4, 0), "size": fields.get(5, 0)}
    except CheckpointError as e:
        raise CheckpointError(f"{index_path} is not a readable TensorFlow checkpoint index: {e}. If it was "
                              "downloaded, delete it and download it again.") from e
    if header is None or header.get(2, 0) != 0:
        raise CheckpointError(f"{index_path}: missing header or big-endian data, which this reader does not handle")
    return records, header.get(1, 1)


def read_checkpoint(prefix):
    """Return {variable name: NumPy array} for the checkpoint ``prefix`` (e.g. ``.../model.ckpt``)."""
    prefix = Path(prefix)
    records, n_shards = read_index(prefix.with_name(prefix.name + ".index"))
    tensors = {}
    for name, record in records.items():
        data_file = prefix.with_name(f"{prefix.name}.data-{record['shard']:05d}-of-{n_shards:05d}")
        if record["dtype"] not in DTYPES:
            raise CheckpointError(f"{prefix}: tensor '{name}' has TensorFlow data type {record['dtype']}, "
                                  f"which this reader does not handle")
        dtype = np.dtype(DTYPES[record["dtype"]]).newbyteorder("<")
        if record["size"] != dtype.itemsize * int(np.prod(record["shape"])):
            raise CheckpointError(f"{prefix}: tensor '{name}' of shape {tuple(record['shape'])} is recorded with "
                                  f"{record['size']} bytes; the index is corrupt, delete the checkpoint and "
                                  "download it again")
        available = data_file.stat().st_size if data_file.exists() else 0
        if record["offset"] + record["size"] > available:
            raise CheckpointError(f"{data_file} is truncated or missing: tensor '{name}' needs bytes up to "
                                  f"{record['offset'] + record['size']:,}, the file has {available:,}. Delete it "
                                  "and download it again.")
        tensors[name] = np.memmap(data_file, dtype=dtype, mode="c", offset=record["offset"],
                                  shape=tuple(record["shape"]))
    return tensors


def write_checkpoint(prefix, arrays):
    """Write ``arrays`` ({name: array}) as a TensorFlow 1 checkpoint at ``prefix``, with TensorFlow itself.

    This is how OpenAI saved GPT-2 (tf.train.Saver: index, data file, ``.meta`` graph, ``checkpoint``). It needs
    TensorFlow, so call it in a process of its own: ``python tf_checkpoint.py write ARRAYS.npz PREFIX ...``.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        variables, feeds = [], {}
        for name, value in arrays.items():
            initial = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)  # keeps values out of .meta
            variables.append(tf.compat.v1.Variable(initial, name=name))
            feeds[initial] = value
        saver = tf.compat.v1.train.Saver(variables, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            saver.save(session, str(prefix))


if __name__ == "__main__":
    if len(sys.argv) < 4 or len(sys.argv) % 2 or sys.argv[1] != "write":
        sys.exit("usage: python tf_checkpoint.py write ARRAYS.npz PREFIX [ARRAYS.npz PREFIX ...]")
    for npz, prefix in zip(sys.argv[2::2], sys.argv[3::2]):
        with np.load(npz) as arrays:
            write_checkpoint(prefix, dict(arrays))
