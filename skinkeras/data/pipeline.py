"""Image reading, in-memory loading and the augmented input pipeline (keras.utils.PyDataset)."""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
from PIL import Image

from skinkeras.data.masks import read_mask, resize_mask


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message is one line naming the file."""


def to_uint8_rgb(img):
    """Converts a PIL image of any mode (L, LA, P, RGBA, CMYK, 16-bit I;16 / I) to uint8 RGB.

    Args:
        img: an opened PIL image.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        # 16-bit data is rescaled, not clipped, so a full-range 16-bit scan keeps its contrast.
        scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.round(arr * (255.0 / scale)), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    if img.mode == "F":
        arr = np.asarray(img)
        arr = np.clip(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_rgb(path):
    """Reads an image as uint8 (H, W, 3) RGB, whatever its mode or bit depth.

    Args:
        path: image file.

    Raises:
        ImageReadError: unreadable or truncated file, with a one-line message naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return to_uint8_rgb(img)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ImageReadError(f"{path}: cannot read image ({reason}); re-export or remove the file") from None


def resize_rgb(image, size):
    """Bilinear resize of a uint8 RGB array to (H, W).

    Args:
        image: uint8 (H, W, 3).
        size: (H, W) target.
    """
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def load_rgb(path, size):
    """Reads one image (any mode) and resizes it to (H, W): the decode of every classifier input.

    Args:
        path: image file.
        size: (H, W) target.
    """
    return resize_rgb(read_rgb(path), size)


def load_pair(pair, size):
    """Reads, checks and resizes one image/mask pair.

    Args:
        pair: `skinkeras.data.isic2018.Pair`.
        size: (H, W) target.

    Returns:
        (image uint8 (H, W, 3), mask uint8 (H, W, 1)); mask is None when the pair has none.

    Raises:
        ValueError: unreadable files, or a mask of another size than its image.
    """
    image = read_rgb(pair.image_path)
    if pair.mask_path is None:
        return resize_rgb(image, size), None
    mask = read_mask(pair.mask_path)
    if mask.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"{pair.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{os.path.basename(pair.image_path)} is {image.shape[1]}x{image.shape[0]}; fix or remove the pair"
        )
    return resize_rgb(image, size), resize_mask(mask, size)[..., None]


def load_all(items, load, path_of, progress=True, workers=2):
    """Runs `load` over `items` in threads with a progress bar, collecting failures instead of raising.

    Args:
        items: things to load.
        load: callable item -> result; ValueError / OSError mean "skip this item".
        path_of: callable item -> path named in the skipped list.
        progress: show a progress bar.
        workers: decoding threads (PIL releases the GIL while decoding).

    Returns:
        (results of the loaded items, their positions in `items`, skipped [(path, reason)]).
    """

    def safe(item):
        try:
            return load(item), None
        except (ValueError, OSError) as exc:
            return None, str(exc)

    bar = keras.utils.Progbar(len(items), unit_name="image") if progress and items else None
    results, kept, skipped = [], [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, (item, (result, error)) in enumerate(zip(items, pool.map(safe, items))):
            if error is None:
                results.append(result)
                kept.append(i)
            else:
                skipped.append((path_of(item), error))
            if bar is not None:
                bar.update(i + 1)
    return results, kept, skipped


def load_pairs(pairs, size, progress=True, workers=2):
    """Loads pairs into memory, skipping (not crashing on) bad files.

    Args:
        pairs: list of `Pair`.
        size: (H, W) target.
        progress: show a progress bar.
        workers: decoding threads.

    Returns:
        (images uint8 (N, H, W, 3), masks uint8 (N, H, W, 1) or None, kept pairs, skipped [(path, reason)]).
    """
    results, kept, skipped = load_all(pairs, lambda p: load_pair(p, size), lambda p: p.image_path, progress, workers)
    if not kept:
        raise ValueError(f"None of the {len(pairs)} images could be loaded; first problem: {skipped[0][1]}")
    masks = [r[1] for r in results]
    has_masks = all(m is not None for m in masks)
    return (np.stack([r[0] for r in results]), (np.stack(masks) if has_masks else None),
            [pairs[i] for i in kept], skipped)


def draw_augmentation(rng, flip_prob=0.5, max_rotation=15.0):
    """One sample's augmentation parameters: (flip, rotation angle in degrees or None).

    Args:
        rng: numpy Generator.
        flip_prob: probability of a horizontal flip.
        max_rotation: maximum absolute rotation in degrees.
    """
    flip = bool(rng.random() < flip_prob)
    return flip, (float(rng.uniform(-max_rotation, max_rotation)) if max_rotation > 0 else None)


def apply_augmentation(views, flip, angle, nearest=()):
    """Flips and rotates aligned views of one sample by the same parameters (see `augment_views`).

    Args:
        views: list of uint8 (H, W, C) arrays (None entries pass through).
        flip: flip horizontally.
        angle: rotation in degrees, or None.
        nearest: indices of views rotated with nearest-neighbour sampling (masks).
    """
    views = list(views)
    if flip:
        views = [None if v is None else v[:, ::-1] for v in views]
    if angle is not None:
        for i, view in enumerate(views):
            if view is None:
                continue
            resample = Image.NEAREST if i in nearest else Image.BILINEAR
            if view.shape[-1] == 3:
                views[i] = np.asarray(Image.fromarray(np.ascontiguousarray(view)).rotate(angle, resample))
            else:
                channels = [Image.fromarray(np.ascontiguousarray(view[..., c])).rotate(angle, resample)
                            for c in range(view.shape[-1])]
                views[i] = np.stack([np.asarray(c) for c in channels], axis=-1)
    return views


# Test-time views as (quarter turns, then horizontal flip): "flip" is the image, its mirror and its vertical
# mirror; "flip-rotate" is all eight symmetries of the square (a lesion seen through a dermatoscope has no up).
TTA_VIEWS = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True), (2, True)),
    "flip-rotate": tuple((turns, flip) for flip in (False, True) for turns in range(4)),
}


def orient(images, turns=0, flip=False):
    """A batch of images turned by `turns` quarter turns (counter-clockwise), then mirrored left-right.

    Args:
        images: (B, H, W, C) array.
        turns: quarter turns (0-3); odd turns need square images.
        flip: mirror left-right after turning.
    """
    if turns % 2 and images.shape[1] != images.shape[2]:
        raise ValueError(f"test-time rotation needs square images; these are {images.shape[1]}x{images.shape[2]}")
    out = np.rot90(images, turns, axes=(1, 2)) if turns % 4 else images
    return out[:, :, ::-1] if flip else out


def augment_views(views, rng, flip_prob=0.5, max_rotation=15.0, nearest=()):
    """The paper's augmentation (4.2), applied identically to several aligned views of one sample.

    Horizontal flip with probability `flip_prob`, then a rotation drawn
    uniformly in +-`max_rotation` degrees (corners filled with black, like a
    dermoscope's vignette). Views are uint8 (H, W, C) arrays: the original and
    segmented image of a pair, or an image and its mask.

    Args:
        views: list of uint8 (H, W, C) arrays (None entries pass through).
        rng: numpy Generator.
        flip_prob: probability of a horizontal flip.
        max_rotation: maximum absolute rotation in degrees.
        nearest: indices of views rotated with nearest-neighbour sampling (masks).
    """
    return apply_augmentation(views, *draw_augmentation(rng, flip_prob, max_rotation), nearest=nearest)


def augment_pair(image, mask, rng, flip_prob=0.5, max_rotation=15.0):
    """Flip + rotation applied identically to an image and its mask (nearest sampling for the mask).

    Args:
        image: uint8 (H, W, 3).
        mask: uint8 (H, W, 1) or None.
        rng: numpy Generator.
        flip_prob: probability of a horizontal flip.
        max_rotation: maximum absolute rotation in degrees.
    """
    image, mask = augment_views([image, mask], rng, flip_prob, max_rotation, nearest=(1,))
    return image, mask


class AugmentedDataset(keras.utils.PyDataset):
    """Epoch bookkeeping shared by the datasets: per-epoch order (plan + shuffle), batching, seeded augmentation.

    Args:
        size: number of samples when there is no plan.
        batch_size: batch size.
        augment: apply flip + rotation (subclasses decide to which arrays).
        shuffle: reshuffle every epoch.
        plan: callable epoch -> index array (e.g. balancing), or None for range(size).
        seed: seed of shuffling and augmentation.
        flip_prob: horizontal flip probability.
        max_rotation: rotation range in degrees.
    """

    def __init__(self, size, batch_size=32, augment=False, shuffle=False, plan=None, seed=0, flip_prob=0.5,
                 max_rotation=15.0, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.augment = augment
        self.shuffle = shuffle
        self.plan = plan
        self.seed = seed
        self.flip_prob = flip_prob
        self.max_rotation = max_rotation
        self.placement = None
        self.training = False
        self.set_epoch(0)

    def distribute(self, placement, training):
        """Lays the batches out for a data-parallel `placement` (`skinkeras.distribute`); returns self.

        Every batch is then whole, because under JAX and TensorFlow a short last batch compiles the train,
        test or predict step a second time (minutes for the paper's TDBN), and on several devices a batch
        must split evenly. A training set fills its last batch with the first samples of the epoch's order
        (they are seen twice that epoch; the next epoch reshuffles), so no sample is left out and the step
        count stays Keras' ceil(N / batch). Any other set is padded, by repeating its last sample, and the
        padded samples get weight 0 (a third element of each batch), so metrics and losses count every
        sample exactly once; `real` is the number before padding, for trimming predictions. Each process
        yields only its share of every global batch.

        Args:
            placement: `skinkeras.distribute.Placement`.
            training: whether this is the training set.
        """
        self.placement = placement
        self.training = bool(training)
        if placement.distributed:
            if training:
                placement.check_batch(self.batch_size)
            else:
                self.batch_size = placement.padded_length(self.batch_size)
        self.order = self._order()
        if training and placement.distributed and self.real < self.batch_size:
            raise ValueError(f"the training split has {self.real} samples, fewer than one batch of "
                             f"{self.batch_size} over {placement.devices} devices; lower --batch-size")
        return self

    @property
    def _padded(self):
        return self.placement is not None and not self.training

    @property
    def _filled(self):
        return self.placement is not None and self.training

    def _order(self):
        order = np.arange(self.size) if self.plan is None else np.asarray(self.plan(self.epoch))
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(order)
        self.real = len(order)
        extra = -len(order) % self.batch_size
        if self._filled and len(order):
            order = np.resize(order, len(order) + extra)  # wraps to the start of the order
        elif self._padded and len(order):
            # the batch size is a multiple of the device count, see `distribute`
            order = np.concatenate([order, np.repeat(order[-1:], extra)])
        return order

    def set_epoch(self, epoch):
        """Starts at `epoch` (a resumed run draws the orders and plans it would have drawn)."""
        self.epoch = epoch
        self.order = self._order()

    def _local(self, values):
        if self.placement is None or self.placement.num_processes == 1:
            return values
        return values[self.placement.local_slice(len(values))]

    def batch_indices(self, index):
        """Sample indices of batch `index` (this process's share of it under a multi-process placement)."""
        return self._local(self.order[index * self.batch_size : (index + 1) * self.batch_size])

    def with_weights(self, index, x, y):
        """The Keras batch: (x, y), or (x, y, weights) with weight 0 on padded samples (see `distribute`).

        Args:
            index: batch index.
            x: inputs.
            y: targets.
        """
        if not self._padded:
            return x, y
        start = index * self.batch_size
        positions = np.arange(start, min(start + self.batch_size, len(self.order)))
        return x, y, self._local((positions < self.real).astype("float32"))

    def augment_rng(self, index):
        """Generator of batch `index`'s augmentation, fixed by seed, epoch and batch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def augment_params(self, index):
        """(flip, angle) of each sample of batch `index` that this process yields.

        Drawn in order for the whole global batch, so a sample is augmented the same whichever process
        holds it.

        Args:
            index: batch index.
        """
        rng = self.augment_rng(index)
        count = len(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        return self._local([draw_augmentation(rng, self.flip_prob, self.max_rotation) for _ in range(count)])

    def __len__(self):
        return math.ceil(len(self.order) / self.batch_size)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)


class SegmentationDataset(AugmentedDataset):
    """Batches of in-memory image/mask arrays, shuffled and augmented per epoch.

    Yields float32 0-255 images (the models preprocess for their encoder
    themselves) and a dict of float32 0/1 masks, one entry per model output
    (the same mask for the deep-supervision heads).

    Args:
        images: uint8 (N, H, W, 3).
        masks: uint8 (N, H, W, 1).
        batch_size: batch size.
        output_names: names of the model outputs that take the mask as target.
        **kwargs: augment, shuffle, seed, flip_prob, max_rotation (see `AugmentedDataset`).
    """

    def __init__(self, images, masks, batch_size=32, output_names=("mask",), **kwargs):
        self.images = images
        self.masks = masks
        self.output_names = tuple(output_names)
        super().__init__(len(images), batch_size, **kwargs)

    def __getitem__(self, index):
        idx = self.batch_indices(index)
        images, masks = self.images[idx], self.masks[idx]
        if self.augment:
            pairs = [apply_augmentation([i, m], *params, nearest=(1,))
                     for i, m, params in zip(images, masks, self.augment_params(index))]
            images = np.stack([p[0] for p in pairs])
            masks = np.stack([p[1] for p in pairs])
        y = masks.astype("float32")
        return self.with_weights(index, images.astype("float32"), {name: y for name in self.output_names})


def load_image_rows(paths, size, progress=True, workers=2):
    """Loads images (any mode) resized to (H, W) into one uint8 array, skipping unreadable files.

    Args:
        paths: image paths.
        size: (H, W).
        progress: show a progress bar.
        workers: decoding threads.

    Returns:
        (images uint8 (N_ok, H, W, 3), kept positions into `paths`, skipped [(path, reason)]).
    """
    images, kept, skipped = load_all(paths, lambda p: load_rgb(p, size), str, progress, workers)
    return (np.stack(images) if images else np.zeros((0, *size, 3), np.uint8)), kept, skipped


class ClassificationDataset(AugmentedDataset):
    """Batches of (inputs dict, labels) for the classifiers, balanced and augmented per epoch.

    Inputs are the model's named inputs (its contract): float32 0-255 images
    (the same flip / rotation for all views of a sample, those named in
    `image_inputs`) and the metadata arrays; only those named in
    `input_names` are yielded. With `plan`, each epoch draws a new balanced
    index list (paper 4.2) from `plan(epoch)`.

    Args:
        arrays: dict input name -> array aligned on the first axis.
        labels: int labels (N,).
        input_names: model input names to yield.
        batch_size: batch size.
        image_inputs: the names among them that are images (augmented together).
        orientation: (quarter turns, flip) applied to every image of every batch (one test-time view,
            `TTA_VIEWS`), or None.
        **kwargs: augment, shuffle, plan, seed, flip_prob, max_rotation (see `AugmentedDataset`).
    """

    def __init__(self, arrays, labels, input_names, batch_size=32, image_inputs=(), orientation=None, **kwargs):
        self.arrays = arrays
        self.orientation = orientation
        self.image_inputs = tuple(n for n in input_names if n in image_inputs)
        self.labels = np.asarray(labels, np.int64)
        self.input_names = tuple(input_names)
        missing = [n for n in self.input_names if n not in arrays]
        if missing:
            raise ValueError(f"model inputs {missing} have no data (available: {sorted(arrays)})")
        super().__init__(len(self.labels), batch_size, **kwargs)

    def __getitem__(self, index):
        idx = self.batch_indices(index)
        batch = {name: self.arrays[name][idx] for name in self.input_names}
        images = self.image_inputs
        if self.augment and images:
            views = [apply_augmentation([batch[n][i] for n in images], *params)
                     for i, params in enumerate(self.augment_params(index))]
            for j, name in enumerate(images):
                batch[name] = np.stack([v[j] for v in views])
        if self.orientation is not None and tuple(self.orientation) != (0, False):
            for name in images:
                batch[name] = orient(batch[name], *self.orientation)
        batch = {name: value.astype("float32") for name, value in batch.items()}
        return self.with_weights(index, batch, self.labels[idx])
