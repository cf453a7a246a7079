# Teacher: the same GFL at twice the width (backbone base 32, FPN and head 64 channels). The
# classification branch bbox_head.gfl_cls has num_classes = 10 outputs in both, so CWD on it needs
# no adapter (as GFL-R101 -> GFL-R50 in MMRazor).
_base_ = ["./_tiny_det_base.py"]
model = dict(
    backbone=dict(base_channels=32),
    neck=dict(in_channels=[64, 128, 256], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64),
)
