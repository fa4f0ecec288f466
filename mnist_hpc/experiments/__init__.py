"""Experiments over many runs: sweeps and the reports that compare their runs. Never imports torch.

- ``sweepfile``: the sweep file (schema, checks, ``load_sweep`` -> ``Sweep`` with lazy ``.runs``)
- ``axes``: what a sweep varies (grid, zip, random draws, seeds), the lazy product, run names
- ``sweep``: training a sweep's runs on this machine (``run_sweep``: parallel, resumable)
- ``report``: gathering finished runs and grouping them (``build_report`` -> ``Comparison``)
- ``tables``, ``figures``, ``pages``: the comparison as tables, figures and Markdown/HTML
"""
