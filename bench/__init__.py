"""Benchmark of Baton against hand-written Celery canvas of the same shapes.

Run it with `python -m bench.run`; see bench/README.md.
"""
