"""Curation filters, one module per family. Importing this package registers every built-in stage."""

from curate.filters.amplitude import AudioAmplitude
from curate.filters.pixel_diff import PixelDiff

__all__ = ["AudioAmplitude", "PixelDiff"]
