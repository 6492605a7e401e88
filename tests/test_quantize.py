"""Block-scaled codecs (``mpiforge.comms.quantize``): payload layout against a NumPy reference
written here from the definition, error bounds derived per codec, decode_add bit for bit, bad input,
and the fp8 / fp4 encodings against ml_dtypes' casts when ml_dtypes is installed.

Error bounds (y = x / scale in code units, scale read back from the payload): int codes round to
the nearest integer, so |err| <= scale / 2. fp8 e4m3 keeps 3 mantissa bits: relative error <= 2^-4
in the normal range, and at most half the smallest subnormal step (2^-10 of the scale) below it.
fp4 e2m1 keeps 1 mantissa bit: relative error <= 2^-2 from 1 up, at most 1/4 of the scale below.
Every bound gets the float32 rounding of x / scale and of code * scale on top: (|x| + absmax) 2^-22,
plus 2^-148 for products that land among the subnormals.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mpiforge.comms.quantize import CODECS, Codec, get_codec

QMAX = {"int8": 127, "fp8": 448, "int4": 7, "fp4": 6}
BITS = {"int8": 8, "fp8": 8, "int4": 4, "fp4": 4}
SIZES = [1, 2, 3, 255, 256, 257, 1000, 1025]


def sample(n: int, seed: int = 0) -> np.ndarray:
    """Normal values with magnitudes spread over many decades, and a zero block when there is room."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 3, n)).astype(np.float32)
    x[256:512] = 0
    return x


def split(codec: Codec, payload: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale per value, code per value) of a payload, unpacked here from the documented layout."""
    nb = -(-n // codec.block)
    scales = payload[:4 * nb].view("<f4").astype(np.float32)
    codes = payload[4 * nb:]
    if BITS[codec.name] == 4:
        codes = np.stack([codes & 0xF, codes >> 4], axis=1).reshape(-1)
    return np.repeat(scales, codec.block)[:n], codes[:n]


def decoded(codec: Codec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(payload, decoded values) of x."""
    payload = codec.encode(x)
    out = np.full(x.size, np.nan, np.float32)
    assert codec.decode(payload, out) is out
    return payload, out


def bound(name: str, x: np.ndarray, scale: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    """Largest |x - decoded| allowed, elementwise (see the module docstring)."""
    ax = np.abs(x).astype(np.float64)
    s = scale.astype(np.float64)
    slack = (ax + absmax) * 2.0 ** -22 + 2.0 ** -148
    if name in ("int8", "int4"):
        return s / 2 + slack
    if name == "fp8":
        return np.maximum(ax * 2.0 ** -4, s * 2.0 ** -10) + slack
    return np.maximum(ax * 2.0 ** -2, s / 4) + slack


def check_bound(codec: Codec, x: np.ndarray) -> None:
    payload, y = decoded(codec, x)
    scale, _ = split(codec, payload, x.size)
    nb = -(-x.size // codec.block)
    padded = np.zeros(nb * codec.block, np.float64)
    padded[:x.size] = np.abs(x)
    absmax = np.repeat(padded.reshape(nb, codec.block).max(axis=1), codec.block)[:x.size]
    err = np.abs(x.astype(np.float64) - y)
    limit = bound(codec.name, x, scale, absmax)
    worst = np.argmax(err - limit)
    assert err[worst] <= limit[worst], (codec, worst, x[worst], y[worst], scale[worst])


def scaled(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x / scale in float32, 0 where the scale is 0."""
    return np.where(scale > 0, x / np.where(scale > 0, scale, np.float32(1)), np.float32(0))


def reference_codes(name: str, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Integer codes from the definition (scale from the payload, checked separately)."""
    y = scaled(x, scale)
    q = QMAX[name]
    return (np.rint(np.clip(y, -q, q)).astype(np.int64) & (0xFF if name == "int8" else 0xF)).astype(np.uint8)


def reference_scales(codec: Codec, x: np.ndarray) -> np.ndarray:
    nb = -(-x.size // codec.block)
    padded = np.zeros(nb * codec.block, np.float32)
    padded[:x.size] = np.abs(x)
    return padded.reshape(nb, codec.block).max(axis=1) / np.float32(QMAX[codec.name])


@pytest.mark.parametrize("name", CODECS)
def test_payload_size_and_layout(name):
    for block in (2, 6, 256):
        codec = get_codec(name, block)
        assert (codec.name, codec.block) == (name, block)
        for n in [0, *SIZES]:
            nb = -(-n // block)
            expected = 4 * nb + (n if BITS[name] == 8 else (n + 1) // 2)
            assert codec.payload_nbytes(n) == expected
            payload = codec.encode(sample(n))
            assert payload.dtype == np.uint8 and payload.shape == (expected,)
            assert np.array_equal(payload[:4 * nb].view("<f4"), reference_scales(codec, sample(n)))


@pytest.mark.parametrize("name", ["int8", "int4"])
@pytest.mark.parametrize("n", SIZES)
def test_int_codes_match_reference(name, n):
    codec = get_codec(name)
    x = sample(n, seed=n)
    payload = codec.encode(x)
    scale, codes = split(codec, payload, n)
    assert np.array_equal(codes, reference_codes(name, x, scale))
    if name == "int4" and n % 2:
        assert payload[-1] >> 4 == 0  # the pad nibble


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("n", SIZES)
def test_round_trip_within_bound(name, n):
    check_bound(get_codec(name), sample(n, seed=n))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(CODECS), block=st.sampled_from([2, 6, 64, 256]),
       x=hnp.arrays(np.float32, st.integers(1, 700),
                    elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)))
def test_round_trip_within_bound_any_values(name, block, x):
    check_bound(get_codec(name, block), x)


@pytest.mark.parametrize("name", CODECS)
def test_grid_values_are_exact(name):
    """Values on the code grid times a power of two, with the largest code present, come back exactly."""
    grid = {"int8": np.arange(-127, 128), "int4": np.arange(-7, 8),
            "fp8": np.append(np.arange(8) * 2.0 ** -9, (1 + np.arange(8) / 8) * 2.0 ** np.arange(-6, 9)[:, None]),
            "fp4": np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])}[name]
    grid = np.unique(np.concatenate([grid, -grid]))
    grid = grid[np.abs(grid) <= QMAX[name]]
    x = (grid * 2.0 ** -5).astype(np.float32)
    codec = get_codec(name, block=2 * len(x))
    _, y = decoded(codec, x)
    assert np.array_equal(y, x)


@pytest.mark.parametrize("name", CODECS)
def test_zero_blocks(name):
    codec = get_codec(name, block=4)
    x = np.array([0, 0, 0, 0, 1, -2, 0, 3, 0, 0], np.float32)
    payload, y = decoded(codec, x)
    assert np.array_equal(payload[:4], np.zeros(4, np.uint8))  # first block: scale 0
    assert np.array_equal(payload[8:12], np.zeros(4, np.uint8))  # last block (partial): scale 0
    _, codes = split(codec, payload, x.size)
    assert not codes[:4].any() and not codes[8:].any()
    assert np.array_equal(y[:4], np.zeros(4, np.float32)) and np.array_equal(y[8:], np.zeros(2, np.float32))
    _, z = decoded(codec, np.zeros(7, np.float32))
    assert not z.any()


@pytest.mark.parametrize("name", CODECS)
def test_one_value(name):
    codec = get_codec(name)
    for v in (1.7, -3e-5, 0.0, 6e7):
        payload, y = decoded(codec, np.array([v], np.float32))
        assert payload.size == 5
        assert abs(float(y[0]) - np.float32(v)) <= abs(v) * 2.0 ** -22


@pytest.mark.parametrize("name", CODECS)
def test_extremes_stay_finite(name):
    big = np.finfo(np.float32).max
    x = np.array([big, -big, 1.0, big / 3], np.float32)
    check_bound(get_codec(name), x)
    _, y = decoded(get_codec(name), x)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("n", [1, 3, 257, 1000])
def test_decode_add_is_decode_then_add(name, n):
    codec = get_codec(name)
    payload, y = decoded(codec, sample(n, seed=1))
    base = sample(n, seed=2)
    acc = base.copy()
    assert codec.decode_add(payload, acc) is acc
    assert np.array_equal(acc.view(np.uint32), (base + y).view(np.uint32))


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("n", [1, 3, 257, 1000])
@pytest.mark.parametrize("block", [2, 6, 256])
def test_fused_encode_has_the_bits_of_separate_calls(name, n, block):
    codec = Codec(name, block)
    base, other = sample(n, seed=4), sample(n, seed=5) * 3
    addend = codec.encode(other)
    # separately: decode_add, encode, decode back
    want_values = base.copy()
    codec.decode_add(addend, want_values)
    want_payload = codec.encode(want_values)
    want_back = codec.decode(want_payload, np.empty(n, np.float32))
    for roundtrip in (False, True):
        x = base.copy()
        got = codec.encode(x, add=addend, roundtrip=roundtrip)
        assert np.array_equal(got, want_payload)
        assert np.array_equal(x.view(np.uint32), (want_back if roundtrip else want_values).view(np.uint32))
    x = base.copy()  # the addend's own buffer as out (the ring re-encodes into the slot it received)
    slot = addend.copy()
    assert codec.encode(x, out=slot, add=slot, roundtrip=True) is not None
    assert np.array_equal(slot, want_payload) and np.array_equal(x.view(np.uint32), want_back.view(np.uint32))
    x = base.copy()
    codec.encode(x, roundtrip=True)
    assert np.array_equal(x, codec.decode(codec.encode(base), np.empty(n, np.float32)))
    with pytest.raises(ValueError, match="in place"):
        codec.encode(base.astype(np.float64), roundtrip=True)
    with pytest.raises(ValueError, match="bytes"):
        codec.encode(base.copy(), add=addend[:-1])


@pytest.mark.parametrize("name", CODECS)
def test_deterministic_and_in_place(name):
    codec = get_codec(name)
    x = sample(1000, seed=3)
    first = codec.encode(x)
    assert np.array_equal(first, codec.encode(x.copy()))
    nbytes = codec.payload_nbytes(x.size)
    buf = np.full(nbytes + 16, 0xAB, np.uint8)
    got = codec.encode(x, out=buf[8:])  # larger than needed: the first nbytes are used
    assert got.size == nbytes and np.shares_memory(got, buf)
    assert np.array_equal(got, first) and (buf[:8] == 0xAB).all() and (buf[8 + nbytes:] == 0xAB).all()
    assert np.array_equal(codec.encode(x.astype(np.float64)), first)
    assert np.array_equal(codec.encode(x[::-1].copy()[::-1]), first)  # non-contiguous input
    halves = x.astype(np.float16)
    assert np.array_equal(codec.encode(halves), codec.encode(halves.astype(np.float32)))
    # decode reads bytes objects and writes only inside out
    guard = np.full(x.size + 16, 7.0, np.float32)
    codec.decode(bytes(first), guard[8:-8])
    assert (guard[:8] == 7).all() and (guard[-8:] == 7).all()
    _, y = decoded(codec, x)
    assert np.array_equal(guard[8:-8], y)


@pytest.mark.parametrize("name", CODECS)
def test_bad_input(name):
    codec = get_codec(name)
    x = sample(600)
    for index, bad in ((5, np.nan), (300, np.inf), (599, -np.inf)):
        y = x.copy()
        y[index] = bad
        with pytest.raises(ValueError, match=f"index {index}"):
            codec.encode(y)
    payload = codec.encode(x)
    out = np.empty(x.size, np.float32)
    for wrong in (payload[:-1], np.append(payload, np.uint8(0))):
        with pytest.raises(ValueError, match="bytes"):
            codec.decode(wrong, out)
        with pytest.raises(ValueError, match="bytes"):
            codec.decode_add(wrong, out)
    with pytest.raises(ValueError, match="bytes"):
        codec.decode(payload, out[:-2])  # (599 values share 600's payload size in the 4-bit codecs)
    with pytest.raises(ValueError, match="float32"):
        codec.decode(payload, np.empty(x.size, np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        codec.decode(payload, np.empty(2 * x.size, np.float32)[::2])
    with pytest.raises(ValueError, match="uint8"):
        codec.decode(payload.view(np.int8), out)
    readonly = out.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        codec.decode(payload, readonly)
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(x, out=np.empty(payload.size, np.int8))
    with pytest.raises(ValueError, match="needs"):
        codec.encode(x, out=np.empty(payload.size - 1, np.uint8))
    with pytest.raises(ValueError, match="1-D"):
        codec.encode(x.reshape(30, 20))
    with pytest.raises(ValueError, match="float"):
        codec.encode(np.arange(10))


def test_get_codec():
    assert get_codec(None) is None
    assert get_codec("fp8", block=64) == Codec("fp8", 64)
    with pytest.raises(ValueError, match="int8, fp8, int4, fp4"):
        get_codec("bf16")
    for block in (0, 3, -2, 2.0):
        with pytest.raises(ValueError, match="block"):
            get_codec("int8", block)


@pytest.mark.parametrize("name,dtype", [("fp8", "float8_e4m3fn"), ("fp4", "float4_e2m1fn")])
def test_minifloats_match_ml_dtypes(name, dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    mtype = getattr(ml_dtypes, dtype)
    codec = get_codec(name)
    # encoding: every grid value, midpoint (tie) and its neighbours, in blocks whose largest value
    # makes the scale exactly 2^-3; then ordinary values
    grid = np.arange(256 if name == "fp8" else 16, dtype=np.uint8).view(mtype).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid)])
    mids = (grid[:-1] + grid[1:]) / 2
    ties = np.concatenate([grid, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)]) * np.float32(2.0 ** -3)
    blocks = np.zeros((-(-ties.size // 255), 256), np.float32)
    blocks[:, 0] = QMAX[name] * 2.0 ** -3
    blocks[:, 1:].reshape(-1)[:ties.size] = ties
    x = np.concatenate([blocks.ravel(), sample(4096, seed=4)])
    payload = codec.encode(x)
    scale, codes = split(codec, payload, x.size)
    y = scaled(x, scale)
    expected = y.astype(mtype).view(np.uint8)
    if name == "fp4":
        expected = expected & 0xF
    assert (scale[:blocks.size] == 2.0 ** -3).all()
    mismatch = np.nonzero(codes != expected)[0]
    assert mismatch.size == 0, (y[mismatch[:5]], codes[mismatch[:5]], expected[mismatch[:5]])
    # decoding: every code with scale 1
    count = 256 if name == "fp8" else 32
    payload = np.concatenate([np.array([1.0], "<f4").view(np.uint8),
                              np.arange(256, dtype=np.uint8) if name == "fp8" else np.arange(16, dtype=np.uint8) * 17])
    out = np.empty(count, np.float32)
    get_codec(name, block=count).decode(payload, out)
    codes = np.arange(count) if name == "fp8" else np.repeat(np.arange(16), 2)
    assert np.array_equal(out, codes.astype(np.uint8).view(mtype).astype(np.float32), equal_nan=True)
