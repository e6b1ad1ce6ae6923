"""Field inspection: ask a documented question of every speech region of a clip and read the answers.

    python examples/field_inspection.py [OUT]
"""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/example_inspection")
clip = here / "clips" / "inspection_1.mp4"

subprocess.run(["onepass", "run", str(clip), "-o", str(out), "--tasks", "transcript",
                "--ask", "which components show a condition"], check=True)  # one of the bundled model's documented questions
subprocess.run(["onepass", "query", str(out), "SELECT start_ms, end_ms, question, text FROM answers ORDER BY start_ms"], check=True)
subprocess.run(["onepass", "export", str(out), "--format", "vtt"], check=True)
