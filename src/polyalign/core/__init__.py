"""Layer 1, core: declarations every layer shares, without torch.

Errors, languages, tasks (+ task YAMLs in tasks/), prompt packs (+ packs/), item ranges, config files,
output paths, model names and generic file IO (files.py). Imports only the standard library, numpy-free
helpers and PyYAML; importing any core module never loads torch (tests/test_layering.py).
"""
