import sys
from pathlib import Path

# The test helpers (fd.py, nets.py, ...) live beside the tests and import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
