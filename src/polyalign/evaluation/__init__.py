"""Layer 3, evaluation: few-shot evaluation of a model on a task's benchmark files.

Input checks, the evaluation loop and its folder, float32 verification, calibration, evaluation
results (sample logs, summaries) and statistics. Imports core and engine.
"""
