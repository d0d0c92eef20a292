import sys

from omnibus.cli import main

sys.exit(main())
