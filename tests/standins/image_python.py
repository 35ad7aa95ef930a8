"""The image's `python`, for the container stand-in: `python -m MODULE ARGS...` importing the kit only from the image.

The dev checkout is installed in editable mode, whose import finder would otherwise serve any kit package (even
one the image does not copy, like control/); it is removed, so a missing COPY fails here as it would in the image.
"""

import os
import runpy
import sys

if len(sys.argv) < 3 or sys.argv[1] != "-m":
    raise SystemExit("usage: image_python.py -m MODULE [ARGS...]")
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in (getattr(f, "__module__", "") or type(f).__module__)]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[0] = os.getcwd()  # as `python -m` does
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
