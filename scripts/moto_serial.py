"""moto's server, one request at a time.

Real DynamoDB applies conditional writes to one item atomically; moto's threaded server
does not (two concurrent `ADD ... IF used < limit` can both pass). Serving requests one
by one restores the guarantee the quota code relies on, so the concurrency tests check
our condition expression, not the emulator's races. Usage: moto_serial.py HOST PORT
"""

import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

if __name__ == "__main__":
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=False, request_handler=MotoRequestHandler)
