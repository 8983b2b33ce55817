"""Pipeline stages: plain classes (``__init__`` loads, ``__call__(batch) -> batch``), no Ray inside.

Batches are dicts of equal-length numpy arrays (Ray Data's ``numpy`` batch format).
"""
