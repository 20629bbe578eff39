"""Curation filters, one module per family. Importing this package registers every built-in stage.

Import order = registration order = the manifest's score-column order (the paper's stage order).
"""

# isort: skip_file
from curate.filters.pixel_diff import PixelDiff
from curate.filters.clip_diff import ClipDiff
from curate.filters.amplitude import AudioAmplitude
from curate.filters.imagebind_align import ImageBindAlign
from curate.filters.psync import PSync

__all__ = ["PixelDiff", "ClipDiff", "AudioAmplitude", "ImageBindAlign", "PSync"]
