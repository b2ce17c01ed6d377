import sys

from kiln_bridge.bridge import main

sys.exit(main())
