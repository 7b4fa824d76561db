"""greenkd: energy-aware parallel blockwise knowledge distillation.

Importing this package is cheap: TensorFlow, pandas and plotly are imported by
the modules that need them, so `greenkd profile` starts in a fraction of a second.
"""

from greenkd.errors import GreenkdError

__version__ = "0.1.0"
__all__ = ["GreenkdError", "__version__"]
