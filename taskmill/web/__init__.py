"""The web dashboard: a page that shows the scheduler live and acts on it.

A client of the scheduler like any other (``AsyncClient`` over the bus): it never imports the
actors. ``taskmill web`` serves it for a deployment; ``SchedulerBuilder.web_port`` serves it from
an embedded scheduler; ``dashboard_app`` is the ASGI application itself, to mount elsewhere.
"""

from taskmill.web.access import check_bind
from taskmill.web.app import dashboard_app
from taskmill.web.server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardServer", "check_bind", "dashboard_app"]
