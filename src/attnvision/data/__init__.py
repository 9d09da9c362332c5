"""Data: image files in any common mode, and the sample images that ship with the package."""

from attnvision.data.augment import Augment
from attnvision.data.datasets import SplitDataset, load_dataset
from attnvision.data.images import SAMPLES, load_image, sample_image, to_tensor

__all__ = ["SAMPLES", "Augment", "SplitDataset", "load_dataset", "load_image", "sample_image",
           "to_tensor"]
