"""Third-party noise that is not the user's business, turned off once when the CLI starts.

Loading a model printed tqdm bars through rich output ("Loading weights", "Writing model
shards"), bitsandbytes logged a missing optional kernel package on every 4-bit load, and
libraries warned about their own API changes (FutureWarning, DeprecationWarning) — things for
library developers, not for someone training a model. Real problems still surface: errors,
UserWarnings and everything Lamina itself says. A user who sets PYTHONWARNINGS, or the
progress-bar variables themselves, keeps their own choice.
"""

from __future__ import annotations

import logging
import os
import warnings

# Loggers that report their own optional extras at WARNING on every use.
_CHATTY_LOGGERS = ("bitsandbytes", "transformers", "datasets", "huggingface_hub", "peft")


def silence_third_party() -> None:
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its fork warning after intake workers
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not os.environ.get("PYTHONWARNINGS"):
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
