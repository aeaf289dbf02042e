from localcloud.compute.server import main
import sys
sys.exit(main())
