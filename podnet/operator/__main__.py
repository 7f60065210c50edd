"""``python -m podnet.operator ...`` runs the operator (same flags as ``podnet operator``)."""

import sys

from podnet.operator.cli import main

sys.exit(main())
