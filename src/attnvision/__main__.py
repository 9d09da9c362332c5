import sys

from attnvision.cli import main

sys.exit(main())
