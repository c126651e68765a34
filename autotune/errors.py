"""One exception hierarchy: library code raises these, the CLI turns each into one line + exit 2."""
from __future__ import annotations


class AutotuneError(Exception):
    """Base class. The message is shown to the user as is: say what was expected and the fix."""


class InvalidTargetError(AutotuneError, ValueError):
    """A search target (size, batch, steps, ceiling, device) that cannot be tuned for."""


class ModelNotFoundError(AutotuneError):
    """`--model` names nothing that can be loaded: no built-in, no local folder, no reachable hub id."""


class UnknownKnobError(AutotuneError, KeyError):
    """A knob name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidAssignmentError(AutotuneError, ValueError):
    """Knob values that are unknown, unavailable here, or conflict with each other."""


class ProfileError(AutotuneError):
    """A profile file that cannot be read: corrupt YAML, unknown schema version, bad values."""


class ProfileMismatchError(AutotuneError):
    """A profile applied to a pipeline it was not tuned for (other model or pipeline class)."""


class NoMatchingProfileError(AutotuneError):
    """No profile in the profile directory matches this pipeline and target size."""


class PipelineStateError(AutotuneError):
    """The pipeline already carries offload or casting hooks, so a profile cannot be applied cleanly."""


class KnobApplyError(PipelineStateError):
    """A knob failed while settings were applied; the message names the knob and whether the
    pipeline was restored."""


class NoFeasibleTrialError(AutotuneError):
    """Every measured trial broke the memory ceiling or failed; no profile is written."""


class StudyError(AutotuneError):
    """The study storage cannot be used as asked (nothing to resume, target mismatch)."""


class PlannerUnsupportedError(AutotuneError):
    """The planner has no trace for this pipeline's denoiser yet (UNet pipelines are supported)."""


class InvalidSearchOptionError(InvalidTargetError):
    """A search option is out of its range (runs, precision, time cap, quality floor...); the
    message names the flag, what it must be and what came."""
