import sys

from beacon.cli import main

sys.exit(main())
