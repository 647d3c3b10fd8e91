import sys

from sigstack.cli import main

sys.exit(main())
