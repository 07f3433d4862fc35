"""Classical lesion-segmentation baseline: Otsu threshold on the smoothed blue channel.

The deep models are compared with this baseline. Steps per image:

1. Downscale so the long side is at most ``work_size`` (full-resolution ISIC images are
   several thousand pixels wide; the mask is upscaled back at the end).
2. Take the blue channel (pigmented skin absorbs blue most, so lesions contrast best there)
   and smooth it with a Gaussian (sigma ~ 1% of the work image's long side), which also
   washes out thin hairs.
3. Find the dark vignette of the dermoscope (near-black pixels connected to the image border)
   and leave it, and everything outside a centred ellipse, out of the histogram, so that Otsu
   separates lesion from skin rather than skin from black corners.
4. Lesion = pixels at or below the Otsu threshold, outside the vignette (an empty mask when the
   two Otsu classes barely differ: featureless skin has no lesion to find).
5. Keep one connected component: components that run along the image border (or the vignette
   edge) are usually shadows, vignette rims or skin folds, so they only win when nothing else of
   a useful size remains; among the rest the largest, weighted towards the image centre, wins.
6. Fill holes, apply a light binary opening and upscale (nearest) to the original size.

Only numpy, scipy.ndimage and PIL are used here; ``segment_folder_otsu`` imports the
project's I/O helpers lazily so that importing this module never loads a Keras backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

#: Default Gaussian sigma as a fraction of the work image's long side.
SIGMA_FRACTION = 0.01
#: Pixels whose brightest channel is below this (after smoothing) may be vignette.
VIGNETTE_LEVEL = 40
#: The threshold histogram uses the centred ellipse with these semi-axes (fractions of H/2, W/2).
CENTRE_ELLIPSE = 1.0
#: Width of the border frame (fraction of the long side) used to tell border-hugging components.
BORDER_FRAME = 0.02
#: A component with more than this fraction of its pixels in the border zone counts as touching it.
BORDER_CONTACT = 0.02
#: Components smaller than this fraction of the field of view are ignored when choosing: dermoscopy
#: frames the lesion, so a speck this small is a freckle or vessel, and a large border-touching
#: component is the better guess.
MIN_AREA = 0.01
#: Below this gap between the two Otsu class means (grey levels) the image has no lesion to find.
MIN_CONTRAST = 10.0
#: Radius (fraction of the long side) of the disc used for the final opening.
OPENING_RADIUS = 0.005


def otsu_threshold(values: np.ndarray) -> float:
    """Returns Otsu's threshold of 8-bit values: values <= threshold form the dark class.

    Classic Otsu on a 256-bin histogram: the threshold maximises the between-class variance
    ``w0 * w1 * (mu0 - mu1) ** 2``. Where several thresholds tie (an empty gap between two
    modes), the middle of the tied run is returned. Non-integer values are rounded and
    clipped to 0..255 first.

    Args:
        values: array of any shape holding 0..255 intensities (uint8 or numeric).
    """
    arr = np.asarray(values).ravel()
    if arr.size == 0:
        return 0.0
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float64))), 0, 255).astype(np.uint8)
    hist = np.bincount(arr, minlength=256).astype(np.float64)
    prob = hist / hist.sum()
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(prob)
    m0 = np.cumsum(prob * levels)
    mean_total = m0[-1]
    denom = w0 * (1.0 - w0)
    # sigma_b^2 = (mu_T w0 - m0)^2 / (w0 w1); undefined (one class empty) where denom is 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where(denom > 1e-12, (mean_total * w0 - m0) ** 2 / denom, -1.0)
    best = between.max()
    if best <= 0:
        # A single grey level: everything is one class.
        return float(arr.max())
    tied = np.flatnonzero(between >= best * (1.0 - 1e-9))
    # Only the first contiguous run of ties, so the midpoint is itself a maximiser.
    run_end = tied[0]
    for index in tied[1:]:
        if index != run_end + 1:
            break
        run_end = index
    return float((tied[0] + run_end) // 2)


def _as_rgb(image):
    """Coerces an image array to uint8 (H, W, 3) without raising on odd inputs.

    Args:
        image: array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        return None
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] >= 3:
        arr = arr[..., :3]
    else:
        return None
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        # Floats in 0..1 are taken as normalised images.
        if np.issubdtype(np.asarray(image).dtype, np.floating) and np.nanmax(arr, initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _disc(radius):
    """Disc-shaped structuring element.

    Args:
        radius: radius in pixels (rounded; 0 gives a single pixel).
    """
    r = max(int(round(radius)), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    # "+ r" (radius ~ r + 0.5) keeps small discs round instead of diamond-shaped.
    return xx * xx + yy * yy <= r * r + r


def _vignette(bright):
    """Near-black region connected to the image border (the dermoscope's vignette).

    Args:
        bright: smoothed brightest-channel image (float, 0..255).
    """
    dark = bright < VIGNETTE_LEVEL
    if not dark.any():
        return dark
    labels, n = ndimage.label(dark)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    return np.isin(labels, edge)


def _choose_component(candidate, valid, border_zone):
    """Keeps the one connected component of `candidate` most likely to be the lesion.

    Args:
        candidate: bool (h, w) dark pixels.
        valid: bool (h, w) field of view (not vignette).
        border_zone: bool (h, w) frame along the image border and the vignette edge.
    """
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    if n == 0:
        return candidate
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(candidate, dtype=np.float64), labels, index)
    contact = ndimage.sum_labels(border_zone.astype(np.float64), labels, index) / area
    h, w = candidate.shape
    yy, xx = np.mgrid[:h, :w]
    # Normalised distance to the centre (1 at the middle of each side).
    dist = np.sqrt(((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2)
    mean_dist = ndimage.mean(dist, labels, index)
    big = area >= MIN_AREA * max(valid.sum(), 1)
    inner = big & (contact <= BORDER_CONTACT)
    pool = inner if inner.any() else (big if big.any() else np.ones(n, bool))
    # Dermoscopy centres the lesion, so a central component outweighs a larger off-centre one.
    score = np.where(pool, area * np.clip(1.0 - 0.5 * mean_dist, 0.05, None), -1.0)
    return labels == index[np.argmax(score)]


def _segment_small(small, sigma):
    """The Otsu mask of a work-size RGB image.

    Args:
        small: uint8 (h, w, 3) downscaled image.
        sigma: Gaussian sigma in work-image pixels.
    """
    h, w = small.shape[:2]
    long_side = max(h, w)
    blue = ndimage.gaussian_filter(small[..., 2].astype(np.float32), sigma) if sigma > 0 else small[..., 2]
    bright = ndimage.gaussian_filter(small.max(axis=-1).astype(np.float32), max(sigma, 1.0))
    vignette = _vignette(bright)
    if vignette.any():
        # The vignette's rim is darker than skin but brighter than the level; left in, it would
        # form a dark ring around the field of view that joins every component touching it.
        vignette = ndimage.binary_dilation(vignette, structure=_disc(max(2.0, 2.0 * sigma)))
    valid = ~vignette
    yy, xx = np.mgrid[:h, :w]
    ellipse = (((yy - (h - 1) / 2) / (CENTRE_ELLIPSE * h / 2)) ** 2
               + ((xx - (w - 1) / 2) / (CENTRE_ELLIPSE * w / 2)) ** 2) <= 1.0
    sample = valid & ellipse
    if sample.sum() < 16:
        sample = valid
    if sample.sum() < 16:
        return np.zeros((h, w), bool)
    values = blue[sample]
    threshold = otsu_threshold(values)
    dark = values <= threshold
    # On featureless skin Otsu still splits the noise in two; no contrast means no lesion.
    if dark.all() or not dark.any() or values[~dark].mean() - values[dark].mean() < MIN_CONTRAST:
        return np.zeros((h, w), bool)
    candidate = (blue <= threshold) & valid
    if not candidate.any():
        return candidate

    frame = max(1, int(round(BORDER_FRAME * long_side)))
    border_zone = np.zeros((h, w), bool)
    border_zone[:frame], border_zone[-frame:], border_zone[:, :frame], border_zone[:, -frame:] = True, True, True, True
    if vignette.any():
        border_zone |= ndimage.binary_dilation(vignette, structure=_disc(frame))
    radius = OPENING_RADIUS * long_side
    if radius >= 1:
        # Breaks thin bridges (hairs, rulers) that would tie the lesion to the border.
        opened = ndimage.binary_opening(candidate, structure=_disc(radius))
        if opened.any():
            candidate = opened
    mask = _choose_component(candidate, valid, border_zone)
    mask = ndimage.binary_fill_holes(mask)
    if radius >= 1:
        opened = ndimage.binary_opening(mask, structure=_disc(radius))
        # Opening can split the lesion; keep the largest piece so one component is returned.
        labels, n = ndimage.label(opened)
        if n > 1:
            sizes = ndimage.sum_labels(np.ones_like(opened), labels, np.arange(1, n + 1))
            opened = labels == 1 + int(np.argmax(sizes))
        if opened.any():
            mask = opened
    return mask


def otsu_mask(image: np.ndarray, smooth_sigma: float | None = None, work_size: int = 512) -> np.ndarray:
    """Segments the lesion of an RGB dermoscopy image with Otsu's threshold on the blue channel.

    Never raises on an odd image (blank, tiny, greyscale, all vignette): the result may be empty.

    Args:
        image: uint8 (H, W, 3) RGB image (greyscale, RGBA and float 0..1 arrays are coerced).
        smooth_sigma: Gaussian sigma in work-image pixels; None means 1% of the work image's long side.
        work_size: the image is downscaled so its long side is at most this many pixels.
    """
    shape = np.shape(image)[:2]
    if len(shape) < 2 or min(shape) == 0:
        return np.zeros(tuple(shape) + (0,) * (2 - len(shape)), bool)
    height, width = shape
    rgb = _as_rgb(image)
    if rgb is None:
        return np.zeros((height, width), bool)
    scale = min(1.0, max(int(work_size), 8) / max(height, width))
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    small = rgb if size == (width, height) else np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    sigma = SIGMA_FRACTION * max(small.shape[:2]) if smooth_sigma is None else float(smooth_sigma)
    mask = _segment_small(small, max(sigma, 0.0))
    if mask.shape != (height, width):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127
    return mask


def segment_folder_otsu(images_dir, out_dir, progress=None) -> dict:
    """Writes the Otsu mask of every image of a folder as out_dir/masks/<stem>_segmentation.png.

    Unreadable images are skipped and listed, so one bad file does not stop a whole folder.

    Args:
        images_dir: folder of images (e.g. ISIC2018_Task1-2_Training_Input).
        out_dir: output folder; masks go to its ``masks`` subfolder (created if needed).
        progress: optional callable, called once per image with its path.

    Returns:
        {"written": number of masks written, "skipped": [(path, reason), ...], "pred_dir": Path of the masks}.
    """
    # Imported here: these modules load Keras, which this module otherwise does not need.
    from skinkeras.data.isic2018 import list_images
    from skinkeras.data.pipeline import ImageReadError, read_rgb
    from skinkeras.data.segdir import MASKS_DIR
    from skinkeras.data.masks import mask_name, write_mask

    pred_dir = Path(out_dir) / MASKS_DIR
    pred_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = 0, []
    for path in list_images(os.fspath(images_dir)):
        try:
            image = read_rgb(path)
        except ImageReadError as exc:
            skipped.append((path, str(exc)))
        else:
            stem = os.path.splitext(os.path.basename(path))[0]
            write_mask(pred_dir / mask_name(stem), otsu_mask(image))
            written += 1
        if progress is not None:
            progress(path)
    return {"written": written, "skipped": skipped, "pred_dir": pred_dir}
