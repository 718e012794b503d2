"""The quality suite: checks the kata itself (exercises, solutions, runner, catalogue)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the kata may touch the network
