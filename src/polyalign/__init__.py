"""polyalign: multilingual question alignment for large language models."""

import warnings as _warnings

__version__ = "0.1.0"

# peft (0.21) reads `model.is_gradient_checkpointing`, which transformers 5.x deprecated in favour of
# `is_activation_checkpointing`: the notice is not for polyalign's users, who saw it on every training
# run. Exactly that one is silenced; polyalign's own forwards use the current API (`cache=`).
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
