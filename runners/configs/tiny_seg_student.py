# Student: PSPNet with a ResNet-18-shaped backbone at 1/4 width (base 16 channels, head 32).
_base_ = ["./_tiny_seg_base.py"]
