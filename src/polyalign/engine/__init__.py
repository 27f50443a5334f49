"""Layer 2, engine: models and the forward passes on them.

Loading models and adapters, precision choice, the unembedding (final norm + head) and answer scoring.
Imports core only.
"""
