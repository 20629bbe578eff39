"""`python -m sync_classifier.train`: train the sync classifier (21-offset symmetric InfoNCE, the authors' recipe).

The entry point only, kept at the name users run. The trainer runs on the project's one training engine and
lives with the other trainers in `train/sync_classifier.py` (settings: `--help`, `--help-config`).
"""

import sys

from train.sync_classifier import main

if __name__ == "__main__":
    sys.exit(main())
