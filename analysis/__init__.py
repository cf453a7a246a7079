"""Analysis of a study's results: the store as a DataFrame (collect), seeds aggregated into typed
records (aggregate, records), built once per report by ``summary.summarise``, the tables and plots
read from them, and format, the only place numbers become strings.

Imports flow one way: ``kdbench`` <- ``analysis`` <- ``reports``.
"""
