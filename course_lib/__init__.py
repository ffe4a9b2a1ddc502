"""course_lib: from-scratch reference implementations for the quantization course.

One module per topic (``formats``, ``affine``, ...), each holding the reference for every
exercise of its notebook under the same name and signature, plus ``grading`` (the helpers
that test cells call), ``models``/``data``/``evaluate`` (offline models, data, metrics),
``plots`` and ``widgets``.  Import the module you need: ``from course_lib import affine``.
"""

__version__ = "0.1.0"

# Bitsandbytes writes a warning to stderr when it imports on a CPU machine; nbgrader scores a
# test cell that writes to stderr 0, so silence it before anything can import it.
import logging as _logging

_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)
# torchao (which transformers imports whenever a model loads) logs warnings on a CPU machine: that its CUDA
# libraries do not load, and (through torch's pytree logger) that registering its enums is deprecated.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
