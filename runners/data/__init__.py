"""The data: a built-in offline dataset, and the checks and preparation of datasets on disk.

``fashion_scenes``: Fashion-MNIST objects pasted onto crops of scikit-image's bundled photos,
written in the mmseg layout (images + label maps) and as COCO instance annotations.
``layout``: what mmseg/mmdet will read under a Cityscapes or COCO root (the preflight and
``kdbench data check``). ``cityscapes``: ``kdbench data prepare cityscapes`` (label ids -> train ids).
"""
