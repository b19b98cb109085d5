"""`python -m flywheel.rehearsal`: see flywheel.rehearsal.run."""

import sys

from flywheel.rehearsal.run import main

sys.exit(main())
