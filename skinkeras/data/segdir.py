"""The SEGDIR layout written by `segment` and read by the classifiers: one reader and one writer.

    SEGDIR/masks/ID_segmentation.png   predicted lesion mask (0/255, the ISIC submission format)
    SEGDIR/segmented/ID.jpg            original x binary mask (paper Figure 2), JPEG quality 95
    SEGDIR/segment.json, skipped.csv   what was written and what was left out

JPEG rather than PNG: a tenth of the size, which matters for 10k-25k images.
"""

import os

import numpy as np
from PIL import Image

from skinkeras.data.masks import mask_name, read_mask, resize_mask, write_mask
from skinkeras.data.pipeline import read_rgb
from skinkeras.names import SEGMENTED

MASKS_DIR = "masks"
# The segmented images are stored under the name of the classifier input they feed.
SEGMENTED_DIR = SEGMENTED
JPEG_QUALITY = 95


def segmented_image(image, mask):
    """Original image times its binary lesion mask (paper Figure 2).

    Args:
        image: uint8 (H, W, 3).
        mask: bool (H, W).
    """
    return image * np.asarray(mask)[..., None].astype(image.dtype)


class SegDir:
    """A folder in the SEGDIR layout.

    Args:
        root: the folder.
    """

    def __init__(self, root):
        self.root = str(root)

    @property
    def masks_folder(self):
        return os.path.join(self.root, MASKS_DIR)

    @property
    def segmented_folder(self):
        return os.path.join(self.root, SEGMENTED_DIR)

    def mask_path(self, image_id):
        """Path of the predicted mask of `image_id`."""
        return os.path.join(self.masks_folder, mask_name(image_id))

    def segmented_path(self, image_id):
        """Path of the segmented image of `image_id`."""
        return os.path.join(self.segmented_folder, f"{image_id}.jpg")

    def has(self, image_id):
        """Whether both outputs of `image_id` exist (a finished image)."""
        return os.path.isfile(self.mask_path(image_id)) and os.path.isfile(self.segmented_path(image_id))

    def create(self):
        """Creates the sub-folders; returns self."""
        os.makedirs(self.masks_folder, exist_ok=True)
        os.makedirs(self.segmented_folder, exist_ok=True)
        return self

    def write(self, image_id, image, mask):
        """Writes the mask and the segmented image of one image; the JPEG appears only when complete.

        Args:
            image_id: image id.
            image: uint8 (H, W, 3) original.
            mask: bool (H, W) at the image's size.
        """
        write_mask(self.mask_path(image_id), mask)
        path = self.segmented_path(image_id)
        tmp = path + ".tmp.jpg"
        Image.fromarray(segmented_image(image, mask)).save(tmp, quality=JPEG_QUALITY)
        os.replace(tmp, path)  # a half-written file must not count as done on the next run


def write_ground_truth(out, records, mask_folder):
    """Writes a SEGDIR from a dataset's own lesion masks instead of predicted ones.

    The classifiers then see segmented images of reference quality: the upper bound of the TDBN's
    segmented branch (paper Figure 2 with a perfect segmenter), and a fixture that needs no trained model.

    Args:
        out: the SEGDIR to write.
        records: rows with `image_id` and `image_path` (a dataset reader's records).
        mask_folder: folder of `ID_segmentation.png` masks (resized to their image where sizes differ).

    Returns:
        (the `SegDir`, skipped [(image_id, reason)] for images whose mask is missing or unreadable).
    """
    segdir, skipped = SegDir(out).create(), []
    for image_id, image_path in zip(records["image_id"], records["image_path"]):
        mask_path = os.path.join(mask_folder, mask_name(image_id))
        try:
            image = read_rgb(image_path)
            mask = resize_mask(read_mask(mask_path), image.shape[:2]).astype(bool)
            segdir.write(image_id, image, mask)
        except (OSError, ValueError) as exc:
            skipped.append((image_id, f"{mask_path}: {exc}"))
    return segdir, skipped
