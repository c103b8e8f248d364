"""Models: one backbone with swappable downsampling, padding and head."""

from shiftbench.models.cnn import DOWNSAMPLES, HEADS, ShiftNet
from shiftbench.models.layers import PADDINGS

__all__ = ["DOWNSAMPLES", "HEADS", "PADDINGS", "ShiftNet"]
