"""flask-eventlib's benchmark suite (issue 6): ``python -m bench`` prints ratios measured side by side.

Every figure is compared with a baseline measured in the same run on the same machine, so the
ratios hold where absolute times do not. ``python -m bench --quick`` runs every benchmark on a
small size (the test suite does, to prove the code works; its figures mean nothing).
"""
