"""Sweeps: named multiruns (`launch`), the Hydra callbacks every run registers
(`callbacks`), and the report of a sweep folder (`report`); `python sweep.py` (`cli`)."""
