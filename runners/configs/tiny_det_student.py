# Student: GFL with a ResNet-18-shaped backbone at 1/4 width, FPN and head at 32 channels.
_base_ = ["./_tiny_det_base.py"]
