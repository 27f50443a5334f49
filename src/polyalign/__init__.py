"""polyalign: multilingual question alignment for large language models."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# transformers 5.x renamed `past_key_values` to `cache` and `is_gradient_checkpointing` to
# `is_activation_checkpointing`; polyalign's forwards and peft still use the old names, which the
# transformers versions polyalign supports accept. Exactly these notices are silenced: they are not
# for polyalign's users and were printed on every run.
_warnings.filterwarnings(
    "ignore", message=r"`past_key_values` is deprecated and will be removed", category=FutureWarning
)
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class _CacheRenameNotice(_logging.Filter):
    def filter(self, record: _logging.LogRecord) -> bool:
        return "`past_key_values`/`cache_params` are deprecated" not in record.getMessage()


_logging.getLogger("transformers.utils.generic").addFilter(_CacheRenameNotice())
