r"""The RISE leaderboard: agents x environments at equal compute (as `rise-gym leaderboard`).

Usage::

    python benchmarks/leaderboard.py          # embedded defaults: ~10 min on 2 CPU cores
    python benchmarks/leaderboard.py --help   # models, back ends, envs, agents, sizes, ...
    python benchmarks/leaderboard.py --agents sequential parallel rise \
        --adapter runs/rise/iteration-1/adapter
"""

import sys

from agents.cli import main

if __name__ == "__main__":
    sys.exit(main(["leaderboard", *sys.argv[1:]]))
