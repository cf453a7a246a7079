# Tiny PSPNet for CPU work: mmseg's real EncoderDecoder + ResNetV1c (dilated, output stride 8)
# + PSPHead, at reduced width, for the 11-class offline "fashion scenes" dataset.
# Derived files set the width: channels of ResNet stage i = base_channels * 2**i (BasicBlock).
norm_cfg = dict(type="BN", requires_grad=True)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics, as every mmseg config
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type="ResNetV1c",
        depth=18,
        base_channels=16,
        stem_channels=16,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style="pytorch",
        contract_dilation=True,
        init_cfg=None,  # no pretrained weights: nothing is downloaded
    ),
    decode_head=dict(
        type="PSPHead",
        in_channels=128,  # 16 * 2**3
        in_index=3,
        channels=32,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=11,  # background + 10 Fashion-MNIST classes
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
