"""The input limits every reader holds to (``hydranet.limits``), printed as JSON for the README's limits.

    python benchmarks/limits.py          # then: tools/figures.py record limits -- python benchmarks/limits.py

Nothing is measured: the README states the limits the code enforces, rendered from this output
(``docs/figures/limits.md``), never typed by hand.
"""

from __future__ import annotations

import json

from hydranet.limits import documented_limits

if __name__ == "__main__":
    print(json.dumps(documented_limits(), indent=1))
