"""Training methods, looked up by name: the baselines here, the four papers' methods as they land."""

from .base import METHODS, Method, MethodOptions, Reporter, get_method, register  # noqa: F401
from . import supervised  # noqa: F401  (registers sparse-only and full)
from . import gradual  # noqa: F401  (registers gradual)
from . import self_labelling  # noqa: F401  (registers self-labelling and its variants)
from . import propagate  # noqa: F401  (registers propagate, the single-scan default)
from . import mean_teacher  # noqa: F401  (registers mean-teacher and ua-mt)
from . import collaborative  # noqa: F401  (registers collaborative)
