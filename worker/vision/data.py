"""The digits data set, its fixed train/test split, and the canonical job input bytes.

Split: scikit-learn's ``load_digits()`` (1,797 images) split by
``train_test_split(test_size=360, random_state=0, stratify=labels)``:
1,437 training and 360 test images, the same on every machine.

Canonical input of an image job: each image as 64 bytes, its pixel values
0..16 row by row, images concatenated. :func:`decode_images` turns those bytes
into the ``(B, 1, 8, 8)`` float32 tensor the head stage takes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from proto.errors import JobInputError

TEST_SIZE = 360
SPLIT_SEED = 0
PIXELS = 64
MAX_IMAGES = 4096  # largest batch accepted in one job input


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # lazy: scikit-learn takes about a second to import; only the digits loaders need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    return train_test_split(d.images.astype(np.uint8), d.target.astype(np.int64), test_size=TEST_SIZE,
                            random_state=SPLIT_SEED, stratify=d.target)


def _tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images.astype(np.float32)).unsqueeze(1), torch.from_numpy(labels.copy())


def digits_train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """Training images ``(1437, 1, 8, 8)`` float32 in 0..16 and labels ``(1437,)`` int64."""
    x_tr, _, y_tr, _ = _split()
    return _tensors(x_tr, y_tr)


def digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """Test images ``(360, 1, 8, 8)`` float32 in 0..16 and labels ``(360,)`` int64."""
    _, x_te, _, y_te = _split()
    return _tensors(x_te, y_te)


def encode_images(images: torch.Tensor) -> bytes:
    """Canonical bytes of ``(B, 1, 8, 8)`` (or ``(B, 8, 8)``) images with integer pixels 0..16."""
    x = images.detach().to("cpu").reshape(-1, PIXELS)
    if x.numel() == 0 or ((x != x.round()) | (x < 0) | (x > 16)).any():
        raise JobInputError("images must be non-empty with integer pixel values in 0..16 (the digits scale)")
    return x.to(torch.uint8).numpy().tobytes()


def decode_images(data: bytes) -> torch.Tensor:
    """Inverse of :func:`encode_images`: ``(B, 1, 8, 8)`` float32; refuses malformed input."""
    if not data or len(data) % PIXELS:
        raise JobInputError(f"image input must be a non-empty multiple of {PIXELS} bytes, got {len(data)}")
    if len(data) > PIXELS * MAX_IMAGES:
        raise JobInputError(f"image input holds more than {MAX_IMAGES} images; split the job")
    x = np.frombuffer(data, dtype=np.uint8)
    if x.max() > 16:
        raise JobInputError("image pixel values must lie in 0..16")
    return torch.from_numpy(x.astype(np.float32)).reshape(-1, 1, 8, 8)
