"""Block-scaled lossy codecs (int8, fp8 e4m3fn, int4, fp4 e2m1) that shrink float32 data on slow links.

A payload is one float32 scale per block of ``block`` values (little-endian, whatever the host),
then the codes: one byte per value (int8, fp8) or two per byte, low nibble first (int4, fp4; an
odd count pads the last high nibble with 0; ``block`` is even so that blocks start on a byte).
Each block is scaled by absmax / qmax, so its largest value maps to the largest code; an all-zero
block has scale 0 and codes 0 (as has a block so tiny that absmax / qmax underflows). Codes round
to nearest even (the minifloats exactly as ml_dtypes' casts) and saturate at the largest code.

Encoding and decoding are single fused numba passes in plain IEEE float32 (no fastmath, so no FMA
contraction): the same values encode to the same bytes and the same payload decodes to the same
bits on every machine, and ``decode_add`` gives exactly the bits of ``decode`` followed by ``+=``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["CODECS", "Codec", "get_codec"]

CODECS = ("int8", "fp8", "int4", "fp4")
_INT8, _FP8, _INT4, _FP4 = range(4)
_JIT = {"cache": True, "nogil": True, "boundscheck": False}
_F32, _U8 = np.dtype(np.float32), np.dtype(np.uint8)
_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_NONE = np.empty(0, np.uint8)  # no payload to add


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float32 as uint32 (a free bitcast)."""
    if x != types.float32:
        return None
    return types.uint32(x), lambda ctx, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


@intrinsic
def _float(typingctx, u):
    """The float32 whose IEEE bits are the low 32 bits of the integer ``u``."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(ctx, builder, sig, args):
        low = builder.trunc(args[0], ir.IntType(32)) if u.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(u), codegen


def _minifloat_table(mbits: int, ebits: int, nan: tuple[int, ...] = ()) -> np.ndarray:
    """Values of every code of a sign / ebits / mbits minifloat (bias 2^(ebits-1) - 1, subnormals)."""
    codes = np.arange(1 << (1 + ebits + mbits))
    e = (codes >> mbits) & ((1 << ebits) - 1)
    m = (codes & ((1 << mbits) - 1)).astype(np.float64)
    bias = (1 << (ebits - 1)) - 1
    mag = np.where(e == 0, m * 2.0 ** (1 - bias - mbits), (1 + m / (1 << mbits)) * 2.0 ** (e - bias))
    table = np.where(codes >> (ebits + mbits), -mag, mag).astype(np.float32)
    table[list(nan)] = np.nan
    return table


def _int_table(bits: int) -> np.ndarray:
    """Values of two's complement codes of ``bits`` bits."""
    codes = np.arange(1 << bits)
    return np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes).astype(np.float32)


# name -> (kind, largest code value qmax, bits per code, value of each code)
_SPECS = {
    "int8": (_INT8, np.float32(127), 8, _int_table(8)),
    "fp8": (_FP8, np.float32(448), 8, _minifloat_table(3, 4, nan=(0x7F, 0xFF))),
    "int4": (_INT4, np.float32(7), 4, _int_table(4)),
    "fp4": (_FP4, np.float32(6), 4, _minifloat_table(1, 2)),
}


@njit(inline="always", **_JIT)
def _int_code(y, qmax):
    """y clipped to [-qmax, qmax] and rounded to the nearest integer (ties to even)."""
    return np.int32(np.rint(min(max(y, -qmax), qmax)))


@njit(inline="always", **_JIT)
def _minifloat_code(y, mbits, bias, maxcode, signbit):
    """Minifloat bits of float32 y (mbits mantissa bits, exponent bias ``bias``), round to nearest
    even, saturating at maxcode. Normal range: round the float32 mantissa to mbits bits (add half
    an ulp minus one plus the lowest kept bit; a carry moves into the exponent), then rebias the
    exponent. Below the smallest normal: count steps of the smallest subnormal."""
    u = _bits(y)
    a = np.int32(u & _ABS)
    shift = 23 - mbits
    normal = ((a + ((1 << (shift - 1)) - 1) + ((a >> shift) & 1)) >> shift) - ((127 - bias) << mbits)
    sub = np.int32(np.rint(abs(y) * np.float32(2.0 ** (bias - 1 + mbits))))  # steps of the subnormal grid
    code = min(normal if a >= (128 - bias) << 23 else sub, maxcode)
    return code | np.int32(u >> 31) << signbit


@njit(inline="always", **_JIT)
def _code(kind, y, qmax):
    """The code of y (already divided by the scale) in codec ``kind``: e4m3 and e2m1 by their bits."""
    if kind == _FP8:
        return _minifloat_code(y, 3, 7, 0x7E, 7)
    if kind == _FP4:
        return _minifloat_code(y, 1, 1, 0x7, 3)
    return _int_code(y, qmax) & (0xFF if kind == _INT8 else 0xF)


@njit(inline="always", **_JIT)
def _encode_block(x, codes, scale, kind, qmax):
    """Codes of x / scale. One loop per kind, indices from 0 (numba's negative-index check
    then folds away): each loop vectorizes."""
    n = x.size
    if kind == _INT8:
        for i in range(n):
            codes[i] = _code(_INT8, x[i] / scale, qmax)
    elif kind == _FP8:
        for i in range(n):
            codes[i] = _code(_FP8, x[i] / scale, qmax)
    elif kind == _INT4:
        for j in range(n >> 1):
            codes[j] = _code(_INT4, x[2 * j] / scale, qmax) | _code(_INT4, x[2 * j + 1] / scale, qmax) << 4
    else:
        for j in range(n >> 1):
            codes[j] = _code(_FP4, x[2 * j] / scale, qmax) | _code(_FP4, x[2 * j + 1] / scale, qmax) << 4
    if kind >= _INT4 and n & 1:
        codes[n >> 1] = _code(kind, x[n - 1] / scale, qmax)


@njit(inline="always", **_JIT)
def _scale_of(payload, b):
    """The float32 scale of block b of a payload (little-endian)."""
    s = np.uint32(0)
    for k in range(4):
        s |= np.uint32(payload[4 * b + k]) << (8 * k)
    return _float(s)


@njit(**_JIT)
def _encode(x, out, block, kind, qmax, addend, table, roundtrip):
    """Fill ``out`` with the payload of x; -1, or the index of the first non-finite value.
    Block by block, while it is in cache: first x += the values of ``addend`` (a payload of
    the same codec, unless empty; it may be ``out`` itself), then encode, then (``roundtrip``)
    x = the values the new codes decode to."""
    n = x.size
    nb = (n + block - 1) // block
    codes = out[4 * nb:]
    half = kind >> 1  # 1 for the 4-bit codecs: code index = value index >> 1
    adding = addend.size > 0
    added = addend[4 * nb:]
    for b in range(nb):
        lo = b * block
        xb = x[lo:lo + block]
        cb = codes[lo >> half:(lo + xb.size + half) >> half]
        if adding:
            _decode_block(added[lo >> half:(lo + xb.size + half) >> half], xb, _scale_of(addend, b), kind, table, True)
        m = np.uint32(0)
        for i in range(xb.size):  # absmax on the bits: vectorizes, and catches inf and NaN
            m = max(m, _bits(xb[i]) & _ABS)
        if m >= _INF:
            for i in range(xb.size):
                if _bits(xb[i]) & _ABS >= _INF:
                    return lo + i
        scale = _float(m) / qmax
        if _bits(scale * qmax) >= _INF:  # absmax near FLT_MAX: round the scale down, decode stays finite
            scale = _float(_bits(scale) - 1)
        s = _bits(scale)
        for k in range(4):
            out[4 * b + k] = (s >> (8 * k)) & 0xFF
        if scale == 0:  # all zero, or so tiny that the scale underflows: decodes to zeros
            cb[:] = 0
        else:
            _encode_block(xb, cb, scale, kind, qmax)
        if roundtrip:
            _decode_block(cb, xb, scale, kind, table, False)
    return -1


@njit(inline="always", **_JIT)
def _decode_block(codes, out, scale, kind, table, add):
    """out = (or +=) table[codes] * scale; indices from 0 as in _encode_block. int8 codes are
    their own values (the table's entries exactly): converted directly, the loops vectorize."""
    n = out.size
    if kind >= _INT4:
        for j in range(n >> 1):
            c = codes[j]
            if add:
                out[2 * j] += table[c & 0xF] * scale
                out[2 * j + 1] += table[c >> 4] * scale
            else:
                out[2 * j] = table[c & 0xF] * scale
                out[2 * j + 1] = table[c >> 4] * scale
        if n & 1:
            v = table[codes[n >> 1] & 0xF] * scale
            out[n - 1] = out[n - 1] + v if add else v
    elif kind == _INT8 and add:
        for i in range(n):
            out[i] += np.float32(np.int8(codes[i])) * scale
    elif kind == _INT8:
        for i in range(n):
            out[i] = np.float32(np.int8(codes[i])) * scale
    elif add:
        for i in range(n):
            out[i] += table[codes[i]] * scale
    else:
        for i in range(n):
            out[i] = table[codes[i]] * scale


@njit(**_JIT)
def _decode(payload, out, block, kind, table, add):
    """out = (or +=) the values of the payload; sizes were checked by the caller."""
    n = out.size
    nb = (n + block - 1) // block
    codes = payload[4 * nb:]
    half = kind >> 1
    for b in range(nb):
        lo = b * block
        ob = out[lo:lo + block]
        _decode_block(codes[lo >> half:(lo + ob.size + half) >> half], ob, _scale_of(payload, b), kind, table, add)


def _vector(a: np.ndarray, what: str, dtype: np.dtype, writeable: bool = True) -> np.ndarray:
    """``a`` if it is a 1-D contiguous (writeable) array of ``dtype``, else ValueError."""
    if isinstance(a, np.ndarray) and a.dtype == dtype and a.ndim == 1:
        flags = a.flags
        if flags.c_contiguous and (flags.writeable or not writeable):
            return a
    desc = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
    raise ValueError(f"{what} must be a 1-D contiguous{' writeable' if writeable else ''} {dtype} array, got {desc}")


@dataclass(frozen=True)
class Codec:
    """One block-scaled codec: ``encode`` float values to a uint8 payload, ``decode`` it back."""

    name: str
    block: int = 256

    def __post_init__(self) -> None:
        if self.name not in _SPECS:
            raise ValueError(f"unknown codec {self.name!r}; choose one of {', '.join(CODECS)}")
        block = self.block
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 2 or block % 2:
            raise ValueError(f"block must be a positive even integer, got {self.block!r}")
        object.__setattr__(self, "block", int(self.block))

    def payload_nbytes(self, n: int) -> int:
        """Wire bytes for n values: 4 per block for the scales, then the codes."""
        return 4 * (-(-n // self.block)) + (n * _SPECS[self.name][2] + 7) // 8

    def encode(self, values: np.ndarray, out: np.ndarray | None = None, add: np.ndarray | None = None,
               roundtrip: bool = False) -> np.ndarray:
        """The payload of 1-D float ``values`` (float16/64 are converted to float32 first), in
        ``out[:payload_nbytes(n)]`` when ``out`` is given. Non-finite values raise ValueError
        (``out`` may then be partly written).

        Fused, in one pass over float32 ``values`` (changed in place): ``add``, a payload of
        this codec (``out`` itself is fine), is first added as ``decode_add`` would; with
        ``roundtrip`` the values become what the payload decodes to. The bits are those of the
        separate calls."""
        x = values
        if add is not None or roundtrip:
            x = _vector(values, "values (changed in place by add= or roundtrip=)", _F32)
        elif not (isinstance(x, np.ndarray) and x.dtype == _F32 and x.ndim == 1 and x.flags.c_contiguous):
            x = np.asarray(values)
            if x.ndim != 1 or x.dtype.kind != "f":
                raise ValueError(f"values must be a 1-D float array, got {x.dtype} {x.shape}")
            x = np.ascontiguousarray(x, dtype=_F32)
        nbytes = self.payload_nbytes(x.size)
        addend = _NONE if add is None else self._payload(add, x.size)
        if out is None:
            out = np.empty(nbytes, _U8)
        else:
            out = _vector(out, "out", _U8)
            if out.size < nbytes:
                raise ValueError(f"out has {out.size} bytes, the {self.name} payload of {x.size} values needs {nbytes}")
            if out.size > nbytes:
                out = out[:nbytes]
        kind, qmax, _, table = _SPECS[self.name]
        bad = _encode(x, out, self.block, kind, qmax, addend, table, roundtrip)
        if bad >= 0:
            raise ValueError(f"cannot encode non-finite value {x[bad]} at index {bad}")
        return out

    def decode(self, payload: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the values of ``payload`` into float32 ``out`` (its size is the value count)."""
        return self._decode(payload, out, False)

    def decode_add(self, payload: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out +=`` the values of ``payload`` in one pass: the same bits as decode, then add."""
        return self._decode(payload, out, True)

    def _payload(self, payload, n: int) -> np.ndarray:
        """``payload`` as a uint8 vector, checked to hold n values of this codec."""
        if not isinstance(payload, np.ndarray):
            payload = np.frombuffer(payload, _U8)  # bytes, bytearray, memoryview
        payload = _vector(payload, "payload", _U8, writeable=False)
        if payload.size != self.payload_nbytes(n):
            raise ValueError(f"a {self.name} payload of {n} values has {self.payload_nbytes(n)} "
                             f"bytes, got {payload.size}")
        return payload

    def _decode(self, payload: np.ndarray, out: np.ndarray, add: bool) -> np.ndarray:
        out = _vector(out, "out", _F32)
        payload = self._payload(payload, out.size)
        kind, _, _, table = _SPECS[self.name]
        _decode(payload, out, self.block, kind, table, add)
        return out


def get_codec(name: str | None, block: int = 256) -> Codec | None:
    """The codec called ``name`` (one of CODECS), or None for None."""
    return None if name is None else Codec(name, block)
