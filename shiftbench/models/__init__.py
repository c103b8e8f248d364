"""Models: one backbone with swappable downsampling, padding and head; a ResNet with the same parts."""

from shiftbench.models.cnn import DOWNSAMPLES, HEADS, ShiftNet
from shiftbench.models.layers import PADDINGS
from shiftbench.models.resnet import ResNet

__all__ = ["DOWNSAMPLES", "HEADS", "PADDINGS", "ResNet", "ShiftNet"]
