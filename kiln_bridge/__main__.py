import sys

from kiln_bridge.cli import main

sys.exit(main())
