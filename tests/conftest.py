import sys
from pathlib import Path

# tests/ holds shared helpers importable by every test module.
sys.path.insert(0, str(Path(__file__).parent))
