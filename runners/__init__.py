"""kdbench runners: the code that trains and evaluates models (imports torch/mmengine lazily)."""
