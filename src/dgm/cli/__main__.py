"""``python -m dgm.cli``."""

import sys

from dgm.cli.main import main

sys.exit(main())
