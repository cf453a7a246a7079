"""Built-in offline datasets for CPU work (no network, deterministic from a seed).

``fashion_scenes``: Fashion-MNIST objects pasted onto crops of scikit-image's bundled photos,
written in the mmseg layout (images + label maps) and as COCO instance annotations.
"""
