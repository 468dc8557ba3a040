"""Quiet by default: what the libraries under hfadapt print unless `--verbose` is given.

A run shows hfadapt's own lines (summary, the training bar, metrics, run directory). The
libraries' chatter -- transformers' "Loading weights" / "Writing model shards" bars and load
reports, datasets' "Generating ... split" and `.map` ("Tokenizing train") bars, Hub download
bars, deprecation warnings from transformers/peft/accelerate/torch -- appears only with
`--verbose`.

No heavy library is imported here (`--help` and `validate` stay instant): a library not yet
imported is quieted through its own environment variables, which it reads when it is first
imported; one already imported (hfadapt used from Python) is quieted through its API. Each
variable is only set where the user has not set it, and a library whose own verbosity
variables the user set is left alone entirely, as are Python warnings under PYTHONWARNINGS / -W.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# library -> (the user's variables that mean "leave me alone", what hfadapt sets when none is set)
_ENV: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    # transformers' progress bars ("Loading weights", "Writing model shards") follow the Hub's switch below.
    "transformers": (("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"),
                     {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}),
    "datasets": (("DATASETS_VERBOSITY", "HF_DATASETS_DISABLE_PROGRESS_BARS"),
                 {"DATASETS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}),
    "huggingface_hub": (("HF_HUB_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"),
                        {"HF_HUB_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}),
}

# Python warnings raised in these packages are hidden (the user cannot act on them from the CLI).
_WARNING_PACKAGES = ("transformers", "peft", "accelerate", "torch", "datasets", "huggingface_hub", "evaluate")
_WARNING_CATEGORIES = (DeprecationWarning, FutureWarning, UserWarning)


def configure(verbose: bool) -> None:
    """Quiet the libraries unless `verbose`; called first thing by the CLI. Imports nothing heavy."""
    if verbose:
        return
    for library, (user_vars, defaults) in _ENV.items():
        if any(name in os.environ for name in user_vars):
            continue
        os.environ.update(defaults)
        if library in sys.modules:  # already imported: the variables come too late
            _quiet_imported(library)
    if "ACCELERATE_LOG_LEVEL" not in os.environ:
        # accelerate's loggers are children of this one; setting the level needs no import
        # (ACCELERATE_LOG_LEVEL itself would also change the root logger's level).
        logging.getLogger("accelerate").setLevel(logging.ERROR)
    if not sys.warnoptions:  # PYTHONWARNINGS or -W given: the user decides
        pattern = rf"({'|'.join(_WARNING_PACKAGES)})(\.|$)"
        for category in _WARNING_CATEGORIES:
            warnings.filterwarnings("ignore", category=category, module=pattern)


def _quiet_imported(library: str) -> None:
    if library == "transformers":
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    elif library == "datasets":
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    elif library == "huggingface_hub":
        from huggingface_hub.utils import disable_progress_bars, logging as hlog

        hlog.set_verbosity_error()
        disable_progress_bars()
