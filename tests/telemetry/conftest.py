import sys
from pathlib import Path

# tests/support holds the toy OIP server shared by the client, load-test and telemetry tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
