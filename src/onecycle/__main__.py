"""``python -m onecycle`` (and ``torchrun -m onecycle``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
