"""Puts the repository root on sys.path so that `configs/*.py` can import each other (as under main.py)."""
