"""Azure Functions entry point (composition root): create the app, register the blueprints.

Settings are read and the store is opened on the first invocation, not here, so indexing
stays fast and free of I/O.
"""

import azure.functions as func

from functions.audit_api import bp as audit_api_bp
from functions.process_session import bp as process_session_bp
from functions.reconcile_trail import bp as reconcile_trail_bp
from functions.timeline_page import bp as timeline_page_bp
from functions.trail_seal import bp as trail_seal_bp
from shared.telemetry import quiet_libraries

# Before the first message is decoded (the extension logs while it converts a batch); the
# setting AUDIT_LIBRARY_LOG_LEVEL applies from the first invocation on (functions/runtime.py).
quiet_libraries()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(process_session_bp)
app.register_functions(audit_api_bp)
app.register_functions(trail_seal_bp)
app.register_functions(reconcile_trail_bp)
app.register_functions(timeline_page_bp)
