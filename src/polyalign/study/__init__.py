"""Layer 6, study: experiments that declare a whole study, and running them.

Experiment files (+ packaged experiments/), the step plan and its step builders, the results
store, and the declared claims (claims_spec; their verdicts are polyalign.reports'). Imports every
layer below.
"""
