"""Model monitoring: the training-time drift reference, live drift metrics, the offline report.

Core-side: importable by the training wing (to build the reference), the serving wing (to count
live traffic) and the offline report; it never imports either wing.
"""
