"""Activation codec: what a hop puts on the wire between two stages.

Pure functions over tensors and bytes; no I/O. A tensor of shape ``(..., C)`` is
seen as ``N`` rows of ``C`` features (a row is one token's hidden state).

Codec ids are fixed (they are named on chain in a job's plan):

====  ==============  ==================================================
 id    name            body
====  ==============  ==================================================
 0     fp32            raw little-endian float32
 1     fp16            raw float16
 2     bf16            raw bfloat16
 3     int8-absmax     blockwise int8, one float32 absmax scale per block
 4     int8-outlier    as 3, after moving outlier rows and elements to 16 bits
 5     int8-dynamic    blockwise 8-bit index into bitsandbytes' dynamic code map
====  ==============  ==================================================

Blocks run over the flattened tensor (``block`` values each, default 64); the
last block may be short. Outlier decomposition (codec 4): a row whose absmax
exceeds ``ROW_RATIO`` x the median row absmax (the attention-sink first token,
~2e4 vs ~1e2) travels whole in 16 bits; then single elements above
``ELEM_RATIO`` x the RMS of what is left travel as (index, 16-bit value) pairs,
at most ``MAX_ELEM_FRACTION`` of the tensor. 16-bit means float16 unless a value
overflows it, then float32 (a flag byte says which).

Layout of ``Encoded.data`` for codec 4 (little-endian)::

    u32 r | u32 row_idx[r] | u8 wide | f16/f32 rows[r*C]
    u32 e | u32 elem_idx[e] | u8 wide | f16/f32 elems[e]
    f32 scales[ceil(n/block)] | i8 codes[n]

Codec 3 is the last line alone; codec 5 is the same with u8 codes.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
from eth_hash.auto import keccak

from proto.errors import CodecError
from proto.types import Codec

logger = logging.getLogger(__name__)

# The ids are the protocol's (proto.types.Codec); these names keep the math below short.
FP32, FP16, BF16, INT8_ABSMAX, INT8_OUTLIER, INT8_DYNAMIC = (int(c) for c in Codec)
NAMES = {int(c): c.label for c in Codec}
BY_NAME = {v: k for k, v in NAMES.items()}

ROW_RATIO = 8.0  # a row is an outlier above this multiple of the median row absmax
ELEM_RATIO = 6.0  # an element is an outlier above this multiple of the body RMS
MAX_ELEM_FRACTION = 0.01  # at most 1% of the elements travel as sparse outliers
MAX_ELEMENTS = 1 << 28  # refuse tensors above 256 Mi elements (1 GiB in fp32)
MAX_BLOCK = 1 << 20  # largest accepted block size (values)
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Encoded:
    """One tensor on the wire: codec id, logical shape, block size, packed body."""

    codec: int
    shape: tuple[int, ...]
    block: int
    data: bytes

    def digest(self) -> bytes:
        """keccak256 over a canonical header and the body: the hop's payload hash."""
        head = struct.pack(f"<BIB{len(self.shape)}Q", self.codec, self.block, len(self.shape), *self.shape)
        return keccak(head + self.data)

    @property
    def nbytes(self) -> int:
        return len(self.data)


def codec_id(name_or_id: str | int) -> int:
    """Accept ``"int8-outlier"`` or ``4``; raise CodecError on anything else."""
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        cid = int(name_or_id)
        if cid in NAMES:
            return cid
    elif name_or_id in BY_NAME:
        return BY_NAME[name_or_id]
    raise CodecError(f"unknown codec {name_or_id!r}; use one of {sorted(BY_NAME)} or ids 0-5")


# --------------------------------------------------------------------------- encode
#
# The int8 codecs run in numpy: on one token's activations a numpy op costs
# about 1 us against 3 us for torch's dispatcher, and the hop pays for both
# an encode and a decode every token. Float32 arithmetic, in the same order
# as the torch formulation (divide by the scale, then multiply by 127; round
# half to even), so the bytes are the same whichever way they are computed.

_127 = np.float32(127)
_TINY = np.float32(1e-30)


def encode(x: torch.Tensor, codec: int, block: int = 64) -> Encoded:
    """Pack ``x`` (any float dtype, any device) with ``codec``."""
    if codec not in NAMES:
        raise CodecError(f"unknown codec id {codec}; valid ids are 0-5")
    if x.numel() == 0 or x.dim() == 0:
        raise CodecError(f"cannot encode an empty or scalar tensor of shape {tuple(x.shape)}")
    if not 1 <= block <= MAX_BLOCK:
        raise CodecError(f"block size {block} out of range [1, {MAX_BLOCK}]")
    shape = tuple(int(s) for s in x.shape)
    t = x.detach() if x.requires_grad else x
    if t.device.type != "cpu" or t.dtype != torch.float32:
        t = t.to("cpu", torch.float32)
    a = np.ascontiguousarray(t.numpy())
    if codec == INT8_OUTLIER:  # checks finiteness on the way
        return Encoded(codec, shape, block, _outlier_pack(a.reshape(-1, shape[-1]), block))
    _check_finite(a)
    if codec == FP32:
        data = a.astype("<f4").tobytes()
    elif codec == FP16:
        if np.abs(a).max() > FP16_MAX:
            raise CodecError("values exceed the float16 range; use codec bf16 or int8-outlier")
        data = a.astype("<f2").tobytes()
    elif codec == BF16:
        data = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    elif codec == INT8_ABSMAX:
        data = _absmax_pack(a.reshape(-1), block)
    else:
        data = _dynamic_pack(torch.from_numpy(a).flatten(), block)
    return Encoded(codec, shape, block, data)


def _check_finite(a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        raise CodecError("tensor holds NaN or Inf; the stage produced invalid activations")


def _absmax_pack(flat: np.ndarray, block: int, mag: np.ndarray | None = None) -> bytes:
    """``mag``: ``abs(flat)`` if the caller has it."""
    scales, blocks = _block_scales(flat, block, mag)
    codes = np.rint(blocks / np.maximum(scales, _TINY)[:, None] * _127).astype(np.int8)
    return scales.astype("<f4").tobytes() + codes.reshape(-1)[: flat.size].tobytes()


def _block_scales(flat: np.ndarray, block: int, mag: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(absmax of each block, the blocks as a (nb, block) array zero-padded at the end)."""
    n = flat.size
    nb = -(-n // block)
    if n != nb * block:
        flat, mag = _pad(flat, nb * block), None
    blocks = flat.reshape(nb, block)
    return (np.abs(blocks) if mag is None else mag.reshape(nb, block)).max(axis=1), blocks


def _pad(v: np.ndarray, size: int) -> np.ndarray:
    """``v`` as float32, zero-padded to ``size`` values."""
    out = np.zeros(size, np.float32)
    out[: v.size] = v
    return out


def _outlier_pack(rows: np.ndarray, block: int) -> bytes:
    # Written for few numpy calls: a decode step encodes one row, right after the
    # stage's compute has pushed this code out of the CPU caches.
    body = rows.copy()  # (N, C)
    head = _NO_ROWS
    if body.shape[0] >= 2:
        row_abs = np.abs(body).max(axis=1)
        _check_finite(row_abs)  # outlier rows leave the body before its check below
        k = (row_abs.size - 1) // 2  # the lower median, as torch.median takes
        median = np.partition(row_abs, k)[k]
        row_idx = np.flatnonzero(row_abs > np.float32(ROW_RATIO) * max(median, _TINY))
        if row_idx.size:
            head = _u32(row_idx) + _wide(body[row_idx].reshape(-1))
            body[row_idx] = 0.0
    flat = body.reshape(-1)
    # np.mean's float32 arithmetic (pairwise float32 sum, then / n) without its Python wrapper
    with np.errstate(over="ignore", invalid="ignore"):
        rms = float(np.sqrt(np.add.reduce(np.square(flat)) / flat.size))
    if not math.isfinite(rms):  # NaN/Inf in the tensor, or squares past float32's range
        _check_finite(flat)
    mag = np.abs(flat)
    cand = np.flatnonzero(mag > np.float32(ELEM_RATIO * max(rms, 1e-30)))
    cap = int(MAX_ELEM_FRACTION * flat.size)
    if cand.size > cap:  # keep the largest ``cap`` (ties: the lower index), in index order
        cand = np.sort(cand[np.argsort(-mag[cand], kind="stable")[:cap]])
    sparse = _NO_ROWS
    if cand.size:
        sparse = _u32(cand) + _wide(flat[cand])  # fancy indexing copies
        flat[cand] = 0.0
        mag[cand] = 0.0
    return head + sparse + _absmax_pack(flat, block, mag)


def _dynamic_pack(flat: torch.Tensor, block: int) -> bytes:
    code = dynamic_map()
    scales, blocks = (torch.from_numpy(v) for v in _block_scales(flat.numpy(), block))
    norm = (blocks / scales.clamp_min(1e-30)[:, None]).flatten()[: flat.numel()]
    mids = (code[1:] + code[:-1]) / 2  # nearest code by bucketising on midpoints
    idx = torch.bucketize(norm, mids).to(torch.uint8)
    return _f32(scales) + idx.numpy().tobytes()


_DYNAMIC: torch.Tensor | None = None


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed dynamic code map (256 sorted float32 values in [-1, 1])."""
    global _DYNAMIC
    if _DYNAMIC is None:
        try:
            from bitsandbytes.functional import create_dynamic_map  # lazy: optional; slow to import
        except ImportError as exc:
            raise CodecError("codec int8-dynamic needs the 'bitsandbytes' package: "
                             "pip install bitsandbytes==0.50.2, or pick codec int8-outlier") from exc
        _DYNAMIC = create_dynamic_map(signed=True).to(torch.float32).sort().values.cpu()
    return _DYNAMIC


def _f32(t: torch.Tensor) -> bytes:
    return t.numpy().astype("<f4").tobytes()


_NO_ROWS = struct.pack("<IB", 0, 0)  # an empty index list and its (f16) width flag


def _u32(idx: np.ndarray) -> bytes:
    return struct.pack("<I", idx.size) + idx.astype("<u4").tobytes()


def _wide(v: np.ndarray) -> bytes:
    if v.size and np.abs(v).max() > FP16_MAX:
        return b"\x01" + v.astype("<f4").tobytes()
    return b"\x00" + v.astype("<f2").tobytes()


# --------------------------------------------------------------------------- decode


def decode(enc: Encoded, max_bytes: int = 1 << 30) -> torch.Tensor:
    """Unpack to a float32 CPU tensor of ``enc.shape``; raise CodecError if malformed."""
    if enc.codec not in NAMES:
        raise CodecError(f"unknown codec id {enc.codec}; valid ids are 0-5")
    if len(enc.data) > max_bytes:
        raise CodecError(f"payload of {len(enc.data)} bytes exceeds the limit of {max_bytes}")
    if not enc.shape or any(s <= 0 for s in enc.shape):
        raise CodecError(f"invalid shape {enc.shape}: every dimension must be positive")
    n = math.prod(enc.shape)
    if n > MAX_ELEMENTS:
        raise CodecError(f"shape {enc.shape} holds {n} elements, above the limit {MAX_ELEMENTS}")
    if not 1 <= enc.block <= MAX_BLOCK:
        raise CodecError(f"block size {enc.block} out of range [1, {MAX_BLOCK}]")
    try:
        flat = _unpack(enc, n)
    except (struct.error, ValueError) as exc:
        raise CodecError(f"malformed {NAMES[enc.codec]} payload for shape {enc.shape}: {exc}") from exc
    if not np.isfinite(flat).all():
        raise CodecError("payload decodes to NaN or Inf; refusing it")
    return torch.from_numpy(flat).view(enc.shape)


def _unpack(enc: Encoded, n: int) -> np.ndarray:
    """The flat float32 values."""
    c, d = enc.codec, enc.data
    if c in (FP32, FP16, BF16):
        width = 4 if c == FP32 else 2
        _need(d, n * width, 0)
        if c == FP32:
            return np.frombuffer(d, "<f4").astype(np.float32)
        if c == FP16:
            return np.frombuffer(d, "<f2").astype(np.float32)
        # numpy has no bfloat16: widen through torch
        return torch.from_numpy(np.frombuffer(d, "<i2").astype(np.int16)).view(torch.bfloat16).float().numpy()
    if c == INT8_ABSMAX:
        flat, used = _absmax_unpack(d, 0, n, enc.block)
    elif c == INT8_DYNAMIC:
        flat, used = _dynamic_unpack(d, 0, n, enc.block)
    else:
        flat, used = _outlier_unpack(d, n, enc.shape[-1], enc.block)
    _need(d, used, 0)
    return flat


def _need(d: bytes, size: int, off: int) -> None:
    if len(d) != size + off:
        raise ValueError(f"expected {size + off} bytes, got {len(d)}")


def _take(d: bytes, off: int, size: int) -> bytes:
    if off + size > len(d):
        raise ValueError(f"payload truncated at byte {len(d)} (needs {off + size})")
    return d[off : off + size]


def _scales(d: bytes, off: int, nb: int) -> np.ndarray:
    scales = np.frombuffer(_take(d, off, 4 * nb), "<f4")
    if not np.isfinite(scales).all() or (scales < 0).any():
        raise ValueError("block scales must be finite and non-negative")
    return scales


def _blocks(values: np.ndarray, n: int, nb: int, block: int) -> np.ndarray:
    """``values`` (n,) as (nb, block), zero-padded at the end (as float32 if padded)."""
    return (values if n == nb * block else _pad(values, nb * block)).reshape(nb, block)


def _absmax_unpack(d: bytes, off: int, n: int, block: int) -> tuple[np.ndarray, int]:
    nb = -(-n // block)
    scales = _scales(d, off, nb)
    codes = _blocks(np.frombuffer(_take(d, off + 4 * nb, n), np.int8), n, nb, block)
    flat = (codes * (scales[:, None] / _127)).reshape(-1)[:n]  # int8 x float32 -> float32, exactly
    return flat, off + 4 * nb + n


def _dynamic_unpack(d: bytes, off: int, n: int, block: int) -> tuple[np.ndarray, int]:
    nb = -(-n // block)
    scales = _scales(d, off, nb)
    idx = np.frombuffer(_take(d, off + 4 * nb, n), np.uint8)
    vals = _blocks(dynamic_map().numpy()[idx], n, nb, block) * scales[:, None]
    return vals.reshape(-1)[:n], off + 4 * nb + n


def _outlier_unpack(d: bytes, n: int, cols: int, block: int) -> tuple[np.ndarray, int]:
    row_idx, off = _idx(d, 0, n // cols)
    rows, off = _wide_unpack(d, off, row_idx.size * cols)
    elem_idx, off = _idx(d, off, n)
    elems, off = _wide_unpack(d, off, elem_idx.size)
    flat, off = _absmax_unpack(d, off, n, block)
    if elem_idx.size:
        flat[elem_idx] += elems
    if row_idx.size:
        flat.reshape(-1, cols)[row_idx] = rows.reshape(-1, cols)
    return flat, off


# --------------------------------------------------------------------------- error bounds

_F16_REL, _F16_SUB = np.float32(2.0**-11), np.float32(2.0**-25)  # half an ulp, relative; half the subnormal step
_BF16_REL, _BF16_SUB = np.float32(2.0**-8), np.float32(1e-38)  # bf16 rounds to 8 significant bits
_STEP_SLACK = np.float32(0.5 + 1e-4)  # half a code step, and float32 rounding of the division on encode
_REL_SLACK = np.float32(1e-6)  # float32 rounding of decoded values


def error_bound(enc: Encoded, decoded: torch.Tensor | None = None) -> np.ndarray:
    """Per value of ``decode(enc)`` (flat float32; pass it as ``decoded`` if already at hand): how far any
    tensor that encodes to ``enc`` can be from it. A receiver compares what its sender claims to have sent
    against what it decoded with this (``worker.verify.received``): a difference beyond it is no rounding
    of the codec's."""
    n = math.prod(enc.shape)
    c, d = enc.codec, enc.data
    flat = _unpack(enc, n) if decoded is None else decoded.reshape(-1).numpy()
    mag = np.abs(flat)
    if c == FP32:
        return mag * _REL_SLACK
    if c == FP16:
        return mag * _F16_REL + _F16_SUB
    if c == BF16:
        return mag * _BF16_REL + _BF16_SUB
    nb = -(-n // enc.block)
    if c == INT8_DYNAMIC:
        code = dynamic_map().numpy()
        gaps = np.diff(code)
        half = np.maximum(np.concatenate([gaps[:1], gaps]), np.concatenate([gaps, gaps[-1:]])) * _STEP_SLACK
        idx = np.frombuffer(d, np.uint8, count=n, offset=4 * nb)
        scales = np.frombuffer(d, "<f4", count=nb)
        body = _blocks(half[idx].astype(np.float32), n, nb, enc.block) * scales[:, None]
        return body.reshape(-1)[:n] + mag * _REL_SLACK
    off, rows_idx, rows, elem_idx, elems = 0, None, None, None, None
    if c == INT8_OUTLIER:
        rows_idx, off = _idx(d, 0, n // enc.shape[-1])
        rows, off, rows_wide = _wide_bound(d, off, rows_idx.size * enc.shape[-1])
        elem_idx, off = _idx(d, off, n)
        elems, off, elems_wide = _wide_bound(d, off, elem_idx.size)
    scales = np.frombuffer(d, "<f4", count=nb, offset=off)
    step = np.repeat(scales / _127 * _STEP_SLACK, enc.block)[:n]
    out = step + mag * _REL_SLACK
    if elem_idx is not None and elem_idx.size:
        out[elem_idx] = _f16_bound(elems, elems_wide) + mag[elem_idx] * _REL_SLACK
    if rows_idx is not None and rows_idx.size:
        cols = enc.shape[-1]
        out.reshape(-1, cols)[rows_idx] = (_f16_bound(rows, rows_wide)
                                           + mag.reshape(-1, cols)[rows_idx].reshape(-1) * _REL_SLACK
                                           ).reshape(-1, cols)
    return out


def _wide_bound(d: bytes, off: int, k: int) -> tuple[np.ndarray, int, bool]:
    wide = _take(d, off, 1) == b"\x01"
    vals, off = _wide_unpack(d, off, k)
    return vals, off, wide


def _f16_bound(v: np.ndarray, wide: bool) -> np.ndarray:
    return np.zeros_like(v) if wide else np.abs(v) * _F16_REL + _F16_SUB


def _idx(d: bytes, off: int, bound: int) -> tuple[np.ndarray, int]:
    (k,) = struct.unpack("<I", _take(d, off, 4))
    if k > bound:
        raise ValueError(f"{k} outlier indices for {bound} slots")
    idx = np.frombuffer(_take(d, off + 4, 4 * k), "<u4").astype(np.int64)
    if k and idx.max() >= bound:
        raise ValueError(f"outlier index {int(idx.max())} out of range {bound}")
    return idx, off + 4 + 4 * k


def _wide_unpack(d: bytes, off: int, k: int) -> tuple[np.ndarray, int]:
    wide = _take(d, off, 1)
    if wide not in (b"\x00", b"\x01"):
        raise ValueError("outlier width flag must be 0 or 1")
    w = 4 if wide == b"\x01" else 2
    raw = np.frombuffer(_take(d, off + 1, w * k), "<f4" if w == 4 else "<f2").astype(np.float32)
    return raw, off + 1 + w * k
