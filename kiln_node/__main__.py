import sys

from kiln_node.cli import main

sys.exit(main())
