import sys

from localcloud.compute.server import main

sys.exit(main())
