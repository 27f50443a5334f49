"""Layer 5, analysis: what happens inside the model.

Hidden states at the answer position, the logit lens and its readout, PCA of language
representations, and their figures. Imports core, engine and evaluation.
"""
