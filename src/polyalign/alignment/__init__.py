"""Layer 4, alignment: question-alignment data and LoRA training.

Alignment pairs and where their records come from, translation, tokenized training data, the
training config (+ configs/), the training loop, the target-token loss, checkpoints and adapter
merging. Imports core and engine.
"""
