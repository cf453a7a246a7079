# Teacher: the same architecture at twice the student's width (base 32 channels, head 64),
# so the feature map (decode_head.bottleneck) has 64 channels against the student's 32 and needs
# an adapter, as PSPNet-R101 (512) vs PSPNet-R18 (128) does at full size.
_base_ = ["./_tiny_seg_base.py"]
model = dict(
    backbone=dict(base_channels=32, stem_channels=32),
    decode_head=dict(in_channels=256, channels=64),  # 32 * 2**3
)
