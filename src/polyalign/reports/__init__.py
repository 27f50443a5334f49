"""Layer 7, reports: what a finished run shows, above running it.

The run's data read back from its store (run_data), the report's tables (tables, seeds,
calibrated), their layout (formats), the report file and figures (report), the claims' verdicts
(claims, claims_data, claims_report, claims_paper) and the paper-side comparisons (paper_*).
Imports every layer below; statistics come from polyalign.evaluation.stats.
"""
