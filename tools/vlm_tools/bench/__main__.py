import sys

from vlm_tools.bench.cli import main

sys.exit(main())
