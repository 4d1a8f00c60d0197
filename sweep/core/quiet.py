"""Library chatter (weight-loading reports, progress bars, deprecation notices) is for the
libraries' developers, not for our users: silence it in every process that trains."""

import warnings


def quiet_libraries() -> None:
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
