"""Initiate the one-node replica set rs0 of a fresh, --auth mongod and create the test users.

Run by scripts/testenv right after mongod opens its port. Uses the localhost exception (no user
exists yet) to initiate the replica set and create the first user, then authenticates as that
user to create the application user. Exits non-zero with a message naming the failed step.

usage: init.py PORT ADMIN_USER ADMIN_PASSWORD APP_USER APP_PASSWORD APP_DATABASE
"""

import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError


def wait_primary(client: MongoClient, deadline: float) -> None:
    while time.monotonic() < deadline:
        if client.admin.command("hello").get("isWritablePrimary"):
            return
        time.sleep(0.05)
    raise TimeoutError("replica set rs0 did not elect a primary in time")


def main() -> int:
    port, admin_user, admin_pw, app_user, app_pw, app_db = sys.argv[1:7]
    deadline = time.monotonic() + 60
    step = "connect"
    try:
        local = MongoClient(
            "127.0.0.1", int(port), directConnection=True, serverSelectionTimeoutMS=10000
        )
        step = "replSetInitiate"
        try:
            local.admin.command(
                "replSetInitiate",
                {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]},
            )
        except OperationFailure as e:
            if e.code != 23:  # AlreadyInitialized
                raise
        step = "wait for PRIMARY"
        wait_primary(local, deadline)
        step = f"createUser {admin_user} (root)"
        local.admin.command(
            "createUser", admin_user, pwd=admin_pw, roles=[{"role": "root", "db": "admin"}]
        )
        admin = MongoClient(
            "127.0.0.1",
            int(port),
            directConnection=True,
            username=admin_user,
            password=admin_pw,
            authSource="admin",
        )
        step = f"createUser {app_user} (readWrite on {app_db})"
        admin[app_db].command(
            "createUser", app_user, pwd=app_pw, roles=[{"role": "readWrite", "db": app_db}]
        )
    except (PyMongoError, TimeoutError) as e:
        print(f"mongodb init: step '{step}' failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
