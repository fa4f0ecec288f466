"""User-facing errors: the CLI prints their message on one line and exits with their code.

A ``UserError`` is a mistake the user can fix (bad config, missing data, wrong checkpoint,
sbatch missing). Anything else is a bug and may show a traceback.
"""


class UserError(Exception):
    """A mistake in the user's input or environment; printed as one line, never a traceback."""

    exit_code = 1


class ConfigError(UserError):
    """Bad configuration or usage (exit code 2, like click's usage errors)."""

    exit_code = 2


class DataError(UserError):
    """Dataset missing, corrupt or unknown."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, not ours, or for another model/config."""


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint (exit code EXIT_INTERRUPTED)."""


# Exit code of a run that stopped on SIGUSR1/SIGUSR2/SIGTERM after checkpointing (requeued or
# not): resume with `mnist-hpc train CONFIG --resume auto`. 75 is EX_TEMPFAIL ("try again").
EXIT_INTERRUPTED = 75
