"""Hostile and fuzzed `.npz` and `.safetensors` files: lying headers, valid checksums.

An .npz is a zip of .npy members; a .safetensors file is a JSON header and bytes. Either
may come from anyone. Whatever its headers claim (duplicate names, members sharing bytes,
zero-width items, empty shapes with huge dimensions, types numpy cannot read), ckptkit
must give back the right arrays or raise a CheckpointError naming the file and the key:
never another exception, a hang, an allocation beyond the file's size, or a silent wrong
value (the oracle: np.load and the `safetensors` package, wherever they return a value).
The zips here are written byte by byte (`raw_zip`), so every field can lie while the
checksums stay valid.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import bounded_memory, subprocess_env, time_limit
from safetensors.numpy import load_file

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import CheckpointError, DataLossError, UnsupportedError
from ckptkit.ops import convert

SEED = 2525
CASE_SECONDS = 5
MEMORY_SLACK = 8 << 20  # peak traced bytes a case may use beyond the file's size

# --------------------------------------------------------------------------- building files

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # signature, version, flags, method, time, date, crc, sizes, name/extra len
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")


def npy(arr: np.ndarray | None = None, *, descr: str | None = None, shape=None, fortran: bool = False,
        data: bytes = b"") -> bytes:
    """An .npy file: numpy's own for `arr`, or a header saying anything (and `data`)."""
    if arr is not None:
        out = io.BytesIO()
        np.lib.format.write_array(out, arr, allow_pickle=False)
        return out.getvalue()
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


def member(name: str, payload: bytes, method: int = zipfile.ZIP_STORED) -> dict:
    """A zip member: its stored (or raw-deflated) bytes and what the headers say of them."""
    data = payload
    if method == zipfile.ZIP_DEFLATED:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(payload) + c.flush()
    return {"name": name, "data": data, "crc": zlib.crc32(payload), "usize": len(payload), "method": method}


def local_record(m: dict) -> bytes:
    name = m["name"].encode()
    return _LOCAL.pack(b"PK\x03\x04", 20, 0, m["method"], 0, 0x21, m["crc"], len(m["data"]), m["usize"],
                       len(name), 0) + name + m["data"]


def raw_zip(members: list[dict], central=None) -> bytes:
    """A zip of `members`, written in order; `central(entries)` may rewrite the central
    directory's entries ({name, offset, csize, usize, crc, method}) before they are written."""
    out = bytearray()
    entries = []
    for m in members:
        entries.append({"name": m["name"], "offset": len(out), "csize": len(m["data"]), "usize": m["usize"],
                        "crc": m["crc"], "method": m["method"]})
        out += local_record(m)
    if central is not None:
        entries = central(entries)
    cd = bytearray()
    for e in entries:
        name = e["name"].encode()
        cd += _CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, e["method"], 0, 0x21, e["crc"] & 0xFFFFFFFF,
                            e["csize"], e["usize"], len(name), 0, 0, 0, 0, 0, e["offset"]) + name
    return bytes(out + cd + _END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), len(out), 0))


def safetensors_bytes(header: dict | str, data: bytes = b"") -> bytes:
    blob = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + data


def write(tmp_path, name: str, raw: bytes) -> str:
    path = os.fspath(tmp_path / name)
    with open(path, "wb") as f:
        f.write(raw)
    return path


def refused(path: str, error=CheckpointError, match: str | None = None, key: str | None = None) -> CheckpointError:
    """Reading every tensor of `path` raises `error` naming the file (and `key`), cheaply."""
    with time_limit(10), bounded_memory(), pytest.raises(error, match=match) as info:
        ckptkit.load(path)
    assert os.path.basename(path) in str(info.value)
    if key is not None:
        assert info.value.key == key, info.value
    return info.value


def one_line_error(args: list[str], *needles: str) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptkit: error:"), result.output
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- 1. what .npz can hold

ML_DTYPES = ["bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
             "float8_e5m2fnuz", "int4", "uint4"]
NPZ_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
              "uint32", "uint64", "bool", "complex64", "complex128"]


def npz_values() -> dict:
    rng = np.random.default_rng(SEED)
    values = {f"v/{d}": (rng.standard_normal((3, 2)) * 100).astype(d) for d in NPZ_DTYPES}
    values["s"] = np.array([b"alpha", "é".encode(), b"\x00x", b""], dtype=object)
    return values


def plain_numpy_load(path: str) -> dict:
    """{name: (dtype str, shape, bytes hex or items)} as numpy alone reads `path`, in a
    process that never imports ml_dtypes (no registered types to lean on)."""
    code = ("import json, sys, numpy as np\n"
            "out = {}\n"
            "with np.load(sys.argv[1], allow_pickle=False) as f:\n"
            "    for k in f.files:\n"
            "        a = f[k]\n"
            "        body = [bytes(v).hex() for v in a.reshape(-1)] if a.dtype.kind == 'S' else a.tobytes().hex()\n"
            "        out[k] = [a.dtype.str, list(a.shape), body]\n"
            "assert 'ml_dtypes' not in sys.modules\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def as_plain(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        if v.dtype == object:
            out[k] = [f"|S{max(len(s) for s in v.reshape(-1))}", list(v.shape), [bytes(s).hex() for s in v.reshape(-1)]]
        else:
            out[k] = [v.dtype.str, list(v.shape), v.tobytes().hex()]
    return out


def test_every_npz_ckptkit_writes_reads_back_in_plain_numpy(tmp_path):
    values = npz_values()
    direct = os.fspath(tmp_path / "direct.npz")
    convert.write_npz(direct, values)
    prefix = os.fspath(tmp_path / "ckpt" / "model")
    ckptkit.Saver(max_to_keep=None).save(values, prefix, write_state=False)
    converted = os.fspath(tmp_path / "converted.npz")
    assert convert.convert(prefix, converted)["left_out"] == []
    for path in (direct, converted):
        assert plain_numpy_load(path) == as_plain(values), path


def ml_checkpoint(tmp_path) -> tuple[str, dict]:
    values = {d: np.arange(4).astype(getattr(ml_dtypes, d)) for d in ML_DTYPES}
    values["ok"] = np.arange(4, dtype=np.float32)
    prefix = os.fspath(tmp_path / "ml" / "model")
    ckptkit.Saver(max_to_keep=None).save(values, prefix, write_state=False, write_meta_graph=False)
    return prefix, values


def test_convert_leaves_every_ml_dtype_out_of_npz(tmp_path):
    prefix, values = ml_checkpoint(tmp_path)
    dst = os.fspath(tmp_path / "out.npz")
    result = convert.convert(prefix, dst)
    assert result["left_out"] == [{"name": d, "reason": f"npz has no {d}"} for d in sorted(ML_DTYPES)]
    assert plain_numpy_load(dst) == as_plain({"ok": values["ok"]})
    for d in ML_DTYPES:  # float8_e5m2 is kind 'f' to numpy: it used to slip through as '<f1'
        with pytest.raises(UnsupportedError, match=f"npz cannot hold {d}") as info:
            convert.write_npz(os.fspath(tmp_path / f"{d}.npz"), {d: values[d]})
        assert info.value.key == d


def test_convert_strict_refuses_float8_in_npz(tmp_path):
    prefix, _ = ml_checkpoint(tmp_path)
    src = os.fspath(tmp_path / "f8.safetensors")
    convert.write_safetensors(src, {"f8": np.ones(3, ml_dtypes.float8_e5m2), "ok": np.ones(2, np.float32)})
    for source, first in ((prefix, "bfloat16"), (src, "float8_e5m2")):
        dst = os.fspath(tmp_path / f"{first}.npz")
        one_line_error(["convert", "--strict", source, dst], f"{first}.npz", first, "cannot write it")
        assert not os.path.exists(dst)
        result = CliRunner().invoke(cli, ["convert", source, dst])
        assert result.exit_code == 0, result.output
        assert "float8_e5m2" not in plain_numpy_load(dst)


# --------------------------------------------------------------------------- 2. empty shapes with huge dims

HUGE_EMPTY = [[0, 2 ** 70], [2 ** 62, 0], [0, 2 ** 62, 2 ** 62], [2 ** 63, 0, 3]]


@pytest.mark.parametrize("shape", HUGE_EMPTY, ids=str)
def test_npz_empty_shape_with_huge_dims(tmp_path, shape):
    raw = raw_zip([member("x.npy", npy(descr="<f4", shape=shape)), member("ok.npy", npy(np.ones(2, np.float32)))])
    path = write(tmp_path, "huge.npz", raw)
    with ckptkit.CheckpointReader(path) as reader:
        assert reader.get_variable_to_shape_map()["x"] == shape  # listed as the file says
        assert reader.get_tensor("ok").tolist() == [1, 1]
        with pytest.raises(UnsupportedError, match="too large for a numpy array") as info:
            reader.get_tensor("x")
        assert info.value.key == "x"
        with pytest.raises(UnsupportedError, match="too large for a numpy array"):
            reader.get_slice("x")[:]
    refused(path, UnsupportedError, "too large for a numpy array", key="x")
    one_line_error(["convert", path, os.fspath(tmp_path / "o.safetensors")], "huge.npz", "'x'", "too large")


@pytest.mark.parametrize("shape", HUGE_EMPTY, ids=str)
def test_safetensors_empty_shape_with_huge_dims(tmp_path, shape):
    header = {"x": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]},
              "ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = write(tmp_path, "huge.safetensors", safetensors_bytes(header, np.ones(1, np.float32).tobytes()))
    with ckptkit.CheckpointReader(path) as reader:
        assert reader.get_variable_to_shape_map()["x"] == shape
        with pytest.raises(UnsupportedError, match="too large for a numpy array"):
            reader.get_tensor("x")
        with pytest.raises(UnsupportedError, match="too large for a numpy array"):
            reader.get_slice("x")[:]
    refused(path, UnsupportedError, "too large for a numpy array", key="x")
    one_line_error(["convert", path, os.fspath(tmp_path / "o.npz")], "huge.safetensors", "'x'", "too large")


def test_npz_negative_dimension(tmp_path):
    path = write(tmp_path, "neg.npz", raw_zip([member("x.npy", npy(descr="<f4", shape=[-1, -2], data=bytes(8)))]))
    refused(path, DataLossError, "negative dimension", key="x")


# --------------------------------------------------------------------------- 3. zero-width items

@pytest.mark.parametrize("descr", ["|S0", "<U0", "|V0", ">U0"])
def test_npz_zero_width_items_do_not_allocate_their_count(tmp_path, descr):
    path = write(tmp_path, "zero.npz", raw_zip([member("x.npy", npy(descr=descr, shape=[1 << 30]))]))
    refused(path, DataLossError, "zero-width items", key="x")
    one_line_error(["ls", path], "zero.npz", "'x'")


def test_npz_a_few_zero_width_strings_read_as_numpy_reads_them(tmp_path):
    path = write(tmp_path, "few.npz", raw_zip([member("x.npy", npy(descr="|S0", shape=[2, 3]))]))
    with np.load(path) as f:
        assert f["x"].shape == (2, 3)
    got = ckptkit.load(path)["x"]
    assert got.shape == (2, 3) and got.reshape(-1).tolist() == [b""] * 6


# --------------------------------------------------------------------------- 4. listing is linear

def test_listing_many_npz_members_is_linear(tmp_path):
    path = os.fspath(tmp_path / "many.npz")
    n = 20000  # quadratic before: 12 to 37 s; now about 1 s (each member's .npy header is checked)
    np.savez(path, **{f"v{i}": np.float32(i) for i in range(n)})
    with time_limit(6), ckptkit.CheckpointReader(path) as reader:
        shapes = reader.get_variable_to_shape_map()
        assert len(shapes) == n and shapes["v19999"] == []
        assert reader.get_tensor("v12345") == np.float32(12345)


# --------------------------------------------------------------------------- 5. duplicate names

def test_npz_same_member_twice(tmp_path):
    raw = raw_zip([member("a.npy", npy(np.ones(2, np.float32))), member("a.npy", npy(np.zeros(3, np.float32)))])
    path = write(tmp_path, "dup.npz", raw)
    with np.load(path) as f:  # numpy keeps one silently
        assert f.files == ["a", "a"]
    refused(path, DataLossError, "member 'a.npy' twice", key="a")
    one_line_error(["ls", path], "dup.npz", "'a.npy' twice")


def test_npz_both_a_and_a_npy(tmp_path):
    raw = raw_zip([member("a.npy", npy(np.ones(2, np.float32))), member("a", npy(np.zeros(3, np.float32)))])
    path = write(tmp_path, "both.npz", raw)
    refused(path, DataLossError, "both 'a.npy' and 'a'", key="a")
    one_line_error(["convert", path, os.fspath(tmp_path / "o.safetensors")], "both.npz", "'a'")


def test_write_npz_refuses_names_numpy_would_confuse(tmp_path):
    path = os.fspath(tmp_path / "o.npz")
    with pytest.raises(UnsupportedError, match="np.load would read") as info:
        convert.write_npz(path, {"a": np.ones(1), "a.npy": np.zeros(1)})
    assert info.value.key == "a.npy" and not os.path.exists(path)


DUPLICATE_HEADERS = {
    "tensor": ('{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
               '"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', "names tensor 'x' twice", "x"),
    "field": ('{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "data_offsets": [4, 8]}}',
              "field 'data_offsets' twice", "x"),
    "metadata": ('{"__metadata__": {"k": "1", "k": "2"}, "x": {"dtype": "F32", "shape": [1], '
                 '"data_offsets": [0, 4]}}', "key 'k' twice", "__metadata__"),
    "metadata itself": ('{"__metadata__": {}, "__metadata__": {"k": "2"}, "x": {"dtype": "F32", "shape": [1], '
                        '"data_offsets": [0, 4]}}', "'__metadata__' twice", "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATE_HEADERS))
def test_safetensors_duplicate_json_keys(tmp_path, case):
    header, match, key = DUPLICATE_HEADERS[case]
    path = write(tmp_path, "dup.safetensors", safetensors_bytes(header, bytes(8)))
    assert json.loads(header)  # json keeps the last silently
    refused(path, DataLossError, match, key=key)
    one_line_error(["ls", path], "dup.safetensors", "twice")


# --------------------------------------------------------------------------- 6. members sharing bytes

def nested_npz(depth: int, inner: bytes) -> bytes:
    """A zip whose members nest: each stored member's array (uint8) is the next member's
    whole local record, and all are listed in the central directory. Every member reads
    cleanly on its own (crcs valid); reading them all takes `depth` times the file."""
    chain = [member(f"m{depth}.npy", inner)]
    for level in range(depth - 1, -1, -1):
        chain.append(member(f"m{level}.npy", npy(np.frombuffer(local_record(chain[-1]), np.uint8))))
    chain.reverse()  # m0, the outermost, first

    def central(entries):
        out, offset = list(entries), 0
        for outer, inner_m in zip(chain, chain[1:], strict=False):
            npy_header = outer["usize"] - len(local_record(inner_m))
            offset += _LOCAL.size + len(outer["name"]) + npy_header
            out.append({"name": inner_m["name"], "offset": offset, "csize": len(inner_m["data"]),
                        "usize": inner_m["usize"], "crc": inner_m["crc"], "method": zipfile.ZIP_STORED})
        return out

    return raw_zip([chain[0]], central)


def test_npz_nested_members_sharing_bytes_are_refused(tmp_path):
    path = write(tmp_path, "nested.npz", nested_npz(24, npy(np.zeros(1 << 20, np.uint8))))
    with zipfile.ZipFile(path) as z:  # every member is a valid zip member ...
        assert len(z.infolist()) == 25 and z.testzip() is None
    with np.load(path) as f:  # ... and a valid array: 25 MiB from a 1 MiB file
        assert sum(f[k].nbytes for k in f.files) > 24 << 20
    refused(path, DataLossError, "overlaps the bytes of 'm0'", key="m1")
    one_line_error(["ls", path], "nested.npz", "overlaps")


def test_npz_entries_aimed_at_one_member(tmp_path):
    good = member("a.npy", npy(np.ones(1000, np.float32)))

    def aim(entries):  # a second entry, another name, at a's local header
        return entries + [dict(entries[0], name="b.npy")]
    refused(write(tmp_path, "aimed.npz", raw_zip([good], aim)), DataLossError)


def test_safetensors_tensors_sharing_bytes_are_refused(tmp_path):
    header = {f"t{i}": {"dtype": "F32", "shape": [1 << 18], "data_offsets": [0, 1 << 20]} for i in range(32)}
    path = write(tmp_path, "shared.safetensors", safetensors_bytes(header, bytes(1 << 20)))
    with pytest.raises(Exception, match="invalid offset"):
        load_file(path)  # the safetensors package refuses it too
    refused(path, DataLossError, "overlap those of 't0'", key="t1")
    one_line_error(["ls", path], "shared.safetensors", "overlap")
    # an empty tensor holds no bytes: anywhere is fine
    header = {"t0": header["t0"], "empty": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}}
    got = ckptkit.load(write(tmp_path, "empty.safetensors", safetensors_bytes(header, bytes(1 << 20))))
    assert got["empty"].shape == (0,) and got["t0"].shape == (1 << 18,)


def test_npz_deflated_member_bounded_by_declared_sizes(tmp_path):
    payload = npy(np.zeros(1 << 20, np.uint8))
    m = member("x.npy", payload, zipfile.ZIP_DEFLATED)

    def lie(size):
        return lambda entries: [dict(entries[0], usize=size)]
    # declares less than the header claims: refused before inflating
    refused(write(tmp_path, "less.npz", raw_zip([m], lie(1000))), DataLossError, key="x")
    # declares more than deflate can give from its bytes
    tiny = member("x.npy", npy(descr="|u1", shape=[1 << 31]), zipfile.ZIP_DEFLATED)
    refused(write(tmp_path, "bomb.npz", raw_zip([tiny], lie(1 << 31))), DataLossError, "more than the archive holds")
    # a legitimately expanding member reads back
    path = os.fspath(tmp_path / "ok.npz")
    np.savez_compressed(path, x=np.zeros(1 << 20, np.uint8))
    assert os.path.getsize(path) < 10000 and ckptkit.load(path)["x"].shape == (1 << 20,)


def test_npz_deflated_member_shorter_than_its_header(tmp_path):
    noise = np.random.default_rng(SEED).bytes(1000)  # incompressible: deflate could give 1 MB from it
    short = member("x.npy", npy(descr="|u1", shape=[500_000], data=noise), zipfile.ZIP_DEFLATED)

    def claim(entries):  # the central directory agrees with the header, the stream does not
        return [dict(entries[0], usize=500_128)]
    refused(write(tmp_path, "short.npz", raw_zip([short], claim)), DataLossError, key="x")


# --------------------------------------------------------------------------- structure-aware fuzzing

DESCRS = ["<f4", ">f4", "|u1", "<i8", "|b1", "<c16", "|S0", "<U0", "|V0", "|V4", "|S3", "<U2", "<f1", "|O",
          "<f2", "[('a', '<f4')]", "bogus"]
DIMS = [0, 1, 2, 3, 5, 6, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 70, -1]
SIZES = [0, 1, 2, 127, 128, 0xFFFE, 0xFFFFFFFF]


def npz_members() -> dict[str, np.ndarray]:
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(-3, 3, dtype=np.int16),
            "s": np.array([b"ab", b"c"]), "u": np.array(["é", "xy"]), "f": np.asfortranarray(np.eye(3))}


def npz_mutations(rng, n: int):
    """(what, zip bytes) of `n` mutated archives: one .npy header field, one central
    directory field, a duplicated or re-aimed entry, or random bytes of one header."""
    base = npz_members()
    names = sorted(base)
    for case in range(n):
        method = zipfile.ZIP_DEFLATED if case % 3 == 0 else zipfile.ZIP_STORED
        payloads = {k: npy(v) for k, v in base.items()}
        victim = names[rng.integers(len(names))]
        central = None
        kind = rng.integers(6)
        if kind == 0:
            shape = [int(rng.choice(DIMS)) for _ in range(rng.integers(0, 4))]
            payloads[victim] = npy(descr=str(rng.choice(DESCRS)), shape=shape, fortran=bool(rng.integers(2)),
                                   data=payloads[victim][128:])
            what = f"npy header {victim}: shape {shape}"
        elif kind == 1:
            raw = bytearray(payloads[victim])
            for _ in range(rng.integers(1, 4)):
                raw[rng.integers(10, 128)] = rng.integers(256)
            payloads[victim] = bytes(raw)
            what = f"npy header bytes {victim}"
        else:
            field = ["usize", "csize", "offset", "name", "crc"][rng.integers(5)] if kind < 5 else "extra entry"
            index = names.index(victim)
            value = int(rng.choice(SIZES)) if field != "name" else names[rng.integers(len(names))] + ".npy"
            other = int(rng.integers(len(names)))

            def central(entries, field=field, index=index, value=value, other=other):
                entries = [dict(e) for e in entries]
                if field == "extra entry":
                    return entries + [dict(entries[index], name=entries[other]["name"] if other % 2 else "z.npy")]
                if field == "offset" and value > 0xFFFFFFFF // 2:
                    value = entries[other]["offset"]
                entries[index][field] = value
                return entries
            what = f"central {field} of {victim}"
        members = [member(k + ".npy", payloads[k], method) for k in names]
        yield f"case {case} ({'deflated' if method else 'stored'}): {what}", raw_zip(members, central)


def npz_oracle(path: str) -> dict | None:
    """np.load's arrays, strings as ckptkit gives them; None where numpy refuses the file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {}
            for k in f.files:
                a = f[k]
                if a.dtype.kind == "S":
                    a = np.array([bytes(v) for v in a.reshape(-1)] or [], dtype=object).reshape(a.shape)
                elif a.dtype.kind == "U":
                    a = np.array([str(v).encode() for v in a.reshape(-1)] or [], dtype=object).reshape(a.shape)
                out[k] = a
            return out
    except Exception:  # noqa: BLE001 - numpy's many errors: no oracle for this case
        return None


def check_case(what: str, path: str, read, oracle) -> str:
    """Read `path` under the guards; a value must equal the oracle's (where it has one)."""
    budget = os.path.getsize(path) + MEMORY_SLACK
    tracemalloc.reset_peak()
    try:
        with time_limit(CASE_SECONDS):
            got = read(path)
    except CheckpointError as exc:
        assert os.path.basename(path) in str(exc), f"{what}: {exc}"
        outcome = type(exc).__name__
    except Exception as exc:
        raise AssertionError(f"{what}: escaped as {type(exc).__name__}: {exc}") from exc
    else:
        outcome = "value"
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < budget, f"{what}: peak allocation {peak} bytes for a {os.path.getsize(path)}-byte file"
    if outcome == "value":
        want = oracle(path)
        assert want is not None and sorted(want) == sorted(got), f"{what}: {sorted(got)} vs numpy {want}"
        for k in got:
            a, b = got[k], want[k]
            if a.size == 0 or b.size == 0:  # (astype of a [2**32, 1, 0] array raises MemoryError)
                equal = a.shape == b.shape and a.dtype.kind == b.dtype.kind
            elif a.dtype == object:
                equal = a.shape == b.shape and a.tolist() == b.tolist()
            else:
                a, b = (x.astype(x.dtype.newbyteorder("=")) for x in (a, b))  # the same values, any byte order
                equal = a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
            assert equal, f"{what}: {k}: {a!r} vs the oracle's {b!r}"
    return outcome


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def test_npz_fields_mutated(tmp_path, traced):
    outcomes: dict[str, int] = {}
    for what, raw in npz_mutations(np.random.default_rng(SEED), 600):
        path = write(tmp_path, "case.npz", raw)
        outcome = check_case(what, path, ckptkit.load, npz_oracle)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("value", 0) > 30 and outcomes.get("DataLossError", 0) > 100, outcomes


ST_CODES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E5M2", "C64", "F4", "", 7]


def safetensors_mutations(rng, n: int):
    """(what, bytes) of `n` mutated safetensors files: one field of one tensor set to a
    boundary value (valid JSON), a key repeated, or tensors aimed at the same bytes."""
    data = np.arange(24, dtype=np.float32).tobytes() + np.arange(6, dtype=np.int64).tobytes()
    base = {"__metadata__": {"format": "np"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "F32", "shape": [18], "data_offsets": [24, 96]},
            "c": {"dtype": "I64", "shape": [6], "data_offsets": [96, 144]}}
    names = ["a", "b", "c"]
    for case in range(n):
        header = json.loads(json.dumps(base))
        victim = names[rng.integers(3)]
        kind = rng.integers(5)
        if kind == 0:
            header[victim]["shape"] = [int(rng.choice(DIMS)) for _ in range(rng.integers(0, 4))]
            what = f"shape of {victim}: {header[victim]['shape']}"
        elif kind == 1:
            header[victim]["dtype"] = ST_CODES[rng.integers(len(ST_CODES))]
            what = f"dtype of {victim}: {header[victim]['dtype']}"
        elif kind == 2:
            lo, hi = (int(rng.choice([0, 4, 24, 96, 144, 2 ** 63, -8])) for _ in range(2))
            header[victim]["data_offsets"] = [lo, hi]
            what = f"data_offsets of {victim}: {[lo, hi]}"
        elif kind == 3:
            other = names[rng.integers(3)]
            header[victim]["data_offsets"] = list(header[other]["data_offsets"])
            header[victim]["shape"], header[victim]["dtype"] = header[other]["shape"], header[other]["dtype"]
            what = f"{victim} aimed at {other}'s bytes"
        else:
            text = json.dumps(header)
            spec = json.dumps({victim: header[victim]})[1:-1]
            yield f"case {case}: {victim} repeated", safetensors_bytes(text[:-1] + ", " + spec + "}", data)
            continue
        yield f"case {case}: {what}", safetensors_bytes(header, data)


def safetensors_oracle(path: str) -> dict | None:
    try:
        return load_file(path)
    except Exception:  # noqa: BLE001 - the package's errors: no oracle for this case
        return None


def test_safetensors_fields_mutated(tmp_path, traced):
    outcomes: dict[str, int] = {}
    for what, raw in safetensors_mutations(np.random.default_rng(SEED), 600):
        path = write(tmp_path, "case.safetensors", raw)
        outcome = check_case(what, path, ckptkit.load, safetensors_oracle)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("value", 0) > 30 and outcomes.get("DataLossError", 0) > 100, outcomes
