"""Mask files: the ISIC formats read and written exactly as the official scorer reads them.

A mask pixel is foreground when its 8-bit value is > 128. Predicted masks
are written as single-channel 8-bit PNGs holding 0 and 255, named
`ID_segmentation.png` (the ISIC submission format).
"""

import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# The scorer's binarisation: strictly greater than 128 is foreground.
BINARY_THRESHOLD = 128
_COLOUR_MODES = frozenset({"P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


def mask_name(image_id):
    """ISIC submission file name of an image's mask.

    Args:
        image_id: image id (file stem).
    """
    return f"{image_id}_segmentation.png"


def _decode_error(path, exc):
    if isinstance(exc, FileNotFoundError):
        return ValueError(f"{path}: file not found; check the path")
    if isinstance(exc, IsADirectoryError):
        return ValueError(f"{path}: is a folder, not an image; pass a mask file")
    if isinstance(exc, UnidentifiedImageError):
        return ValueError(f"{path}: not a recognised image format; save the mask as an 8-bit greyscale PNG")
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ValueError(
        f"{path}: cannot decode image ({reason}); the file is truncated or corrupt, re-export the mask"
    )


def _to_uint8(image, path):
    mode = image.mode
    if mode == "L":
        return np.asarray(image)
    if mode == "1" or mode in _COLOUR_MODES:
        # Pillow's ITU-R 601 luma keeps 0/255 grey-valued masks exact; alpha is ignored.
        return np.asarray(image.convert("L"))
    if mode == "I" or mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise ValueError(
                f"{path}: mode {mode} values span {wide.min()}..{wide.max()}, outside 16-bit 0..65535; "
                "save the mask as an 8-bit greyscale PNG"
            )
        # v/257 inverts the usual 8->16 bit expansion (v8 * 257); no ties occur for integers.
        return np.rint(wide / 257.0).astype(np.uint8)
    raise ValueError(f"{path}: unsupported image mode {mode!r}; save the mask as an 8-bit greyscale PNG")


def read_mask(path, *, strict=False) -> np.ndarray:
    """Read a mask file as a bool HxW array, foreground where the 8-bit value is > 128.

    8-bit ``L`` and 1-bit images are read like the scorer. Colour/palette images
    (RGB, RGBA, LA, P, ...) are converted to ``L`` with Pillow (luma, alpha dropped).
    16-bit (``I;16*``) and 32-bit ``I`` images are taken as 0..65535 and scaled to
    8 bits with ``round(v / 257)`` before the ``> 128`` test.

    Args:
        path: image file.
        strict: reject everything but 8-bit ``L`` and 1-bit images, as the scorer does.
    """
    path = Path(path)
    # DecompressionBombError is not an OSError: a bomb mask is a bad file like any other
    decode_errors = (OSError, SyntaxError, EOFError, ValueError, zlib.error, Image.DecompressionBombError)
    try:
        image = Image.open(path)
    except decode_errors as exc:
        raise _decode_error(path, exc) from exc
    with image:
        try:
            image.load()
        except decode_errors as exc:
            raise _decode_error(path, exc) from exc
        if strict and image.mode not in ("L", "1"):
            raise ValueError(
                f"{path}: mode {image.mode} is not single-channel 8-bit greyscale "
                "(the ISIC scorer rejects it); "
                "save it with skinkeras.data.masks.write_mask"
            )
        return _to_uint8(image, path) > BINARY_THRESHOLD


def write_mask(path, mask_bool) -> None:
    """Write a mask as a single-channel 8-bit PNG holding 0 and 255 (the ISIC submission format).

    Args:
        path: output file; its folder must exist.
        mask_bool: HxW (or HxWx1) bool array, or a numeric array holding only 0 and 1.
    """
    arr = np.asarray(mask_bool)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{path}: mask shape {np.shape(mask_bool)} is not HxW; pass a 2-D mask")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"{path}: mask holds values other than 0/1; threshold it first (e.g. prob > 0.5)"
            )
        arr = arr.astype(bool)
    Image.fromarray(arr.astype(np.uint8) * 255).save(Path(path), format="PNG")


def resize_mask(mask, size):
    """Nearest-neighbour resize of a binary mask to (H, W), returning uint8 0/1.

    Args:
        mask: bool or 0/1 (H, W).
        size: (H, W) target.
    """
    img = Image.fromarray(np.asarray(mask).astype(np.uint8) * 255)
    if np.shape(mask)[:2] != tuple(size):
        img = img.resize((size[1], size[0]), Image.NEAREST)
    return (np.asarray(img) > 127).astype(np.uint8)
