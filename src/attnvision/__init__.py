"""attnvision: attention models for image analysis, from patch tokens to Segment Anything."""

__version__ = "0.1.0"
