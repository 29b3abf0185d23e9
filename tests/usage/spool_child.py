"""A separate process writing usage records, for the ledger tests.

``python -m tests.usage.spool_child VAR_DIR PREFIX COUNT MODE [--wait-go] [--hold]``
with MODE ``spool`` (append to the spool only) or ``write-now``
(``usage_record_write_now``, which spools when the database is down). It
prints ``written`` when done; ``--hold`` then waits on stdin (so the test
can kill it while it still owns its segment).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("var_dir")
    parser.add_argument("prefix")
    parser.add_argument("count", type=int)
    parser.add_argument("mode", choices=["spool", "write-now"])
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()

    django.setup()
    from django.conf import settings

    settings.USAGE_SPOOL_DIR = str(Path(args.var_dir) / "spool")

    from tests.billing.factories import record_data
    from usage import spool
    from usage.services import usage_record_write_now

    records = [record_data(request_id=f"{args.prefix}-{i}") for i in range(args.count)]
    if args.wait_go:
        sys.stdin.readline()
    for record in records:
        if args.mode == "spool":
            spool.append(record.to_line())
        else:
            usage_record_write_now(record)
    print("written", flush=True)
    if args.hold:
        sys.stdin.readline()


if __name__ == "__main__":
    main()
