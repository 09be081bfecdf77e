"""Fault-injection scenarios, shared by `python -m scripts.faults` (full runs) and `tests/faults/test_faults.py`
(bounded runs).

Each scenario drives the real receiver against fakes on loopback, injects one kind of fault, checks what
must hold afterwards and returns a `Report`: its figures, and `problems` (empty when every invariant held).
"""
