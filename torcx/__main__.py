# SPDX-License-Identifier: Apache-2.0
"""``python -m torcx ...`` runs the ``torcx`` command."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:], prog="torcx"))
