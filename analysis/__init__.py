"""Analysis of a study's results: the store as a DataFrame (collect), seeds aggregated into cells
(aggregate), tables and plots built from them, and format, the only place numbers become strings.

Imports flow one way: ``kdbench`` <- ``analysis`` <- ``reports``.
"""
