"""``kdbench bench``: performance figures measured side by side in one process (ratios, medians
of interleaved repeats), with the machine they ran on."""
