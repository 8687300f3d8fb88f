"""Initiate the replica set of fresh, --auth mongod processes and create the test users.

Run by scripts/testenv right after every member opens its port. Uses the localhost exception (no
user exists yet) to initiate the set and create the first user on its primary, then
authenticates as that user to create the application user. One port: the one-node set of the
shared server. Several ports: a set of equal members with a short election timeout, for the
failover tests. Exits non-zero with a message naming the failed step.

usage: init.py SET PORT[,PORT...] ADMIN_USER ADMIN_PASSWORD APP_USER APP_PASSWORD APP_DATABASE
"""

import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError


def direct(port: int, **auth) -> MongoClient:
    return MongoClient(
        "127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=10000, **auth
    )


def wait_primary(client: MongoClient, deadline: float) -> str:
    """The host:port of the set's primary, once there is one."""
    while time.monotonic() < deadline:
        hello = client.admin.command("hello")
        if hello.get("primary"):
            return hello["primary"]
        time.sleep(0.05)
    raise TimeoutError("the replica set did not elect a primary in time")


def main() -> int:
    name, ports_arg, admin_user, admin_pw, app_user, app_pw, app_db = sys.argv[1:8]
    ports = [int(p) for p in ports_arg.split(",")]
    deadline = time.monotonic() + 90
    step = "connect"
    try:
        first = direct(ports[0])
        step = "replSetInitiate"
        config = {
            "_id": name,
            "members": [{"_id": i, "host": f"127.0.0.1:{p}"} for i, p in enumerate(ports)],
        }
        if len(ports) > 1:
            config["settings"] = {"electionTimeoutMillis": 3000, "heartbeatIntervalMillis": 500}
        try:
            first.admin.command("replSetInitiate", config)
        except OperationFailure as e:
            if e.code != 23:  # AlreadyInitialized
                raise
        step = "wait for PRIMARY"
        primary_port = int(wait_primary(first, deadline).rsplit(":", 1)[1])
        primary = direct(primary_port)
        while not primary.admin.command("hello").get("isWritablePrimary"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"127.0.0.1:{primary_port} did not become writable")
            time.sleep(0.05)
        step = f"createUser {admin_user} (root)"
        primary.admin.command(
            "createUser", admin_user, pwd=admin_pw, roles=[{"role": "root", "db": "admin"}]
        )
        admin = direct(primary_port, username=admin_user, password=admin_pw, authSource="admin")
        step = f"createUser {app_user} (readWrite on {app_db})"
        admin[app_db].command(
            "createUser", app_user, pwd=app_pw, roles=[{"role": "readWrite", "db": app_db}]
        )
        if len(ports) > 1:
            step = "wait for every member to be PRIMARY or SECONDARY"
            while True:
                states = [m["stateStr"] for m in admin.admin.command("replSetGetStatus")["members"]]
                if all(s in ("PRIMARY", "SECONDARY") for s in states):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"member states: {states}")
                time.sleep(0.1)
    except (PyMongoError, TimeoutError) as e:
        print(f"mongodb init: step '{step}' failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
