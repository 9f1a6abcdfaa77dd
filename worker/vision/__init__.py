"""Vision models on scikit-learn's 8x8 digits: data split, job input bytes, models, training.

Public API::

    digits_test_split() -> (images (360, 1, 8, 8) float32 0..16, labels (360,) int64)
    encode_images(images) -> bytes        # 64 uint8 pixels per image
    decode_images(data) -> (B, 1, 8, 8) float32
"""

from worker.vision.data import decode_images, digits_test_split, digits_train_split, encode_images

__all__ = ["digits_test_split", "digits_train_split", "encode_images", "decode_images"]
