"""User-facing errors.

Every mistake a user can make (bad file, bad prompt, bad checkpoint) raises a
``SammedError`` subclass with a one-line message; the CLI prints it and exits with
status 2 instead of showing a traceback.
"""


class SammedError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class ImageReadError(SammedError):
    """An input image is missing, truncated, or not an image."""


class InvalidImageError(SammedError):
    """An image was read but cannot be used (wrong dimensionality, NaN, constant...)."""


class PromptError(SammedError):
    """A prompt is malformed or lies outside the image."""


class CheckpointError(SammedError):
    """A checkpoint cannot be loaded (unsafe pickle, wrong keys, unreadable)."""


class UnknownModelError(SammedError):
    """A model name is not in the registry."""


class ImageWriteError(SammedError):
    """An image or mask cannot be written (unsupported format, unwritable location...)."""
