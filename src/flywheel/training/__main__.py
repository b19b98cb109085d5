"""`python -m flywheel.training ...`: the training entry point (see flywheel.training.run)."""

import sys

from flywheel.training.run import main

sys.exit(main())
