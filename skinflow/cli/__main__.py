import sys

from skinflow.cli.commands import main

sys.exit(main())
