"""kdbench: knowledge distillation for dense prediction, benchmarked and ablated.

The core package is light (no torch import at package import time) so that the CLI verbs that only
read specs and results start fast on a login node.
"""

__version__ = "0.1.0"
