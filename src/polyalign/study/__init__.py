"""Layer 6, study: experiments that declare a whole study, and their reports.

Experiment files (+ packaged experiments/), the step plan and its step builders, the results
store, run data, statistics tables, reports and claims. Imports every layer below.
"""
