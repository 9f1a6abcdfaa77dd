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

from tessera.errors import CodecError

logger = logging.getLogger(__name__)

FP32, FP16, BF16, INT8_ABSMAX, INT8_OUTLIER, INT8_DYNAMIC = 0, 1, 2, 3, 4, 5
NAMES = {FP32: "fp32", FP16: "fp16", BF16: "bf16", INT8_ABSMAX: "int8-absmax",
         INT8_OUTLIER: "int8-outlier", INT8_DYNAMIC: "int8-dynamic"}
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


def encode(x: torch.Tensor, codec: int, block: int = 64) -> Encoded:
    """Pack ``x`` (any float dtype, any device) with ``codec``."""
    if codec not in NAMES:
        raise CodecError(f"unknown codec id {codec}; valid ids are 0-5")
    if x.numel() == 0 or x.dim() == 0:
        raise CodecError(f"cannot encode an empty or scalar tensor of shape {tuple(x.shape)}")
    if not 1 <= block <= MAX_BLOCK:
        raise CodecError(f"block size {block} out of range [1, {MAX_BLOCK}]")
    x = x.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(x).all():
        raise CodecError("tensor holds NaN or Inf; the stage produced invalid activations")
    shape = tuple(int(s) for s in x.shape)
    if codec == FP32:
        data = x.numpy().astype("<f4").tobytes()
    elif codec == FP16:
        if x.abs().max().item() > FP16_MAX:
            raise CodecError("values exceed the float16 range; use codec bf16 or int8-outlier")
        data = x.to(torch.float16).numpy().astype("<f2").tobytes()
    elif codec == BF16:
        data = x.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    elif codec == INT8_ABSMAX:
        data = _absmax_pack(x.flatten(), block)
    elif codec == INT8_OUTLIER:
        data = _outlier_pack(x.reshape(-1, shape[-1]), block)
    else:
        data = _dynamic_pack(x.flatten(), block)
    return Encoded(codec, shape, block, data)


def _absmax_pack(flat: torch.Tensor, block: int) -> bytes:
    scales, blocks = _block_scales(flat, block)
    codes = torch.round(blocks / scales.clamp_min(1e-30)[:, None] * 127).to(torch.int8)
    return _f32(scales) + codes.flatten()[: flat.numel()].numpy().tobytes()


def _block_scales(flat: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = flat.numel()
    pad = (-n) % block
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, block)  # (nb, block)
    return blocks.abs().amax(dim=1), blocks


def _outlier_pack(rows: torch.Tensor, block: int) -> bytes:
    body = rows.clone()  # (N, C)
    row_abs = body.abs().amax(dim=1)
    row_idx = torch.empty(0, dtype=torch.long)
    if body.shape[0] >= 2:
        row_idx = torch.nonzero(row_abs > ROW_RATIO * row_abs.median().clamp_min(1e-30)).flatten()
    out_rows = body[row_idx].flatten()
    body[row_idx] = 0.0
    flat = body.flatten()
    rms = flat.square().mean().sqrt().item()
    cand = torch.nonzero(flat.abs() > ELEM_RATIO * max(rms, 1e-30)).flatten()
    cap = int(MAX_ELEM_FRACTION * flat.numel())
    if cand.numel() > cap:
        cand = cand[flat[cand].abs().topk(cap).indices].sort().values
    elems = flat[cand].clone()
    flat[cand] = 0.0
    return (_u32(row_idx) + _wide(out_rows) + _u32(cand) + _wide(elems) + _absmax_pack(flat, block))


def _dynamic_pack(flat: torch.Tensor, block: int) -> bytes:
    code = dynamic_map()
    scales, blocks = _block_scales(flat, block)
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
            from bitsandbytes.functional import create_dynamic_map
        except ImportError as exc:
            raise CodecError("codec int8-dynamic needs the 'bitsandbytes' package: "
                             "pip install bitsandbytes==0.50.2, or pick codec int8-outlier") from exc
        _DYNAMIC = create_dynamic_map(signed=True).to(torch.float32).sort().values.cpu()
    return _DYNAMIC


def _f32(t: torch.Tensor) -> bytes:
    return t.numpy().astype("<f4").tobytes()


def _u32(idx: torch.Tensor) -> bytes:
    return struct.pack("<I", idx.numel()) + idx.numpy().astype("<u4").tobytes()


def _wide(v: torch.Tensor) -> bytes:
    if v.numel() and v.abs().max().item() > FP16_MAX:
        return b"\x01" + v.numpy().astype("<f4").tobytes()
    return b"\x00" + v.numpy().astype("<f2").tobytes()


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
    if not torch.isfinite(flat).all():
        raise CodecError("payload decodes to NaN or Inf; refusing it")
    return flat.view(enc.shape)


def _unpack(enc: Encoded, n: int) -> torch.Tensor:
    c, d = enc.codec, enc.data
    if c in (FP32, FP16, BF16):
        width = 4 if c == FP32 else 2
        _need(d, n * width, 0)
        if c == FP32:
            return torch.from_numpy(np.frombuffer(d, "<f4").astype(np.float32))
        if c == FP16:
            return torch.from_numpy(np.frombuffer(d, "<f2").astype(np.float32))
        return torch.from_numpy(np.frombuffer(d, "<i2").astype(np.int16)).view(torch.bfloat16).float()
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


def _absmax_unpack(d: bytes, off: int, n: int, block: int) -> tuple[torch.Tensor, int]:
    nb = -(-n // block)
    scales = np.frombuffer(_take(d, off, 4 * nb), "<f4").astype(np.float32)
    if not np.isfinite(scales).all() or (scales < 0).any():
        raise ValueError("block scales must be finite and non-negative")
    codes = np.frombuffer(_take(d, off + 4 * nb, n), np.int8).astype(np.float32)
    codes = np.pad(codes, (0, nb * block - n)).reshape(nb, block)
    flat = torch.from_numpy(codes * (scales[:, None] / 127)).flatten()[:n]
    return flat, off + 4 * nb + n


def _dynamic_unpack(d: bytes, off: int, n: int, block: int) -> tuple[torch.Tensor, int]:
    nb = -(-n // block)
    scales = np.frombuffer(_take(d, off, 4 * nb), "<f4").astype(np.float32)
    if not np.isfinite(scales).all() or (scales < 0).any():
        raise ValueError("block scales must be finite and non-negative")
    idx = np.frombuffer(_take(d, off + 4 * nb, n), np.uint8).astype(np.int64)
    vals = dynamic_map().numpy()[idx]
    vals = np.pad(vals, (0, nb * block - n)).reshape(nb, block) * scales[:, None]
    return torch.from_numpy(vals).flatten()[:n], off + 4 * nb + n


def _outlier_unpack(d: bytes, n: int, cols: int, block: int) -> tuple[torch.Tensor, int]:
    row_idx, off = _idx(d, 0, n // cols)
    rows, off = _wide_unpack(d, off, row_idx.numel() * cols)
    elem_idx, off = _idx(d, off, n)
    elems, off = _wide_unpack(d, off, elem_idx.numel())
    flat, off = _absmax_unpack(d, off, n, block)
    flat[elem_idx] += elems
    view = flat.view(-1, cols)
    view[row_idx] = rows.view(-1, cols)
    return flat, off


def _idx(d: bytes, off: int, bound: int) -> tuple[torch.Tensor, int]:
    (k,) = struct.unpack("<I", _take(d, off, 4))
    if k > bound:
        raise ValueError(f"{k} outlier indices for {bound} slots")
    idx = np.frombuffer(_take(d, off + 4, 4 * k), "<u4").astype(np.int64)
    if k and idx.max() >= bound:
        raise ValueError(f"outlier index {int(idx.max())} out of range {bound}")
    return torch.from_numpy(idx), off + 4 + 4 * k


def _wide_unpack(d: bytes, off: int, k: int) -> tuple[torch.Tensor, int]:
    wide = _take(d, off, 1)
    if wide not in (b"\x00", b"\x01"):
        raise ValueError("outlier width flag must be 0 or 1")
    w = 4 if wide == b"\x01" else 2
    raw = np.frombuffer(_take(d, off + 1, w * k), "<f4" if w == 4 else "<f2").astype(np.float32)
    return torch.from_numpy(raw.copy()), off + 1 + w * k
