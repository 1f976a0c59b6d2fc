"""The dashboards: the mall's, one per partner, and the operators' page.

Server-rendered pages (Jinja2) with one small script that reads the same query API
(`beacon.query.run`) the bearer-key clients use, scoped by a signed session cookie.
"""

from __future__ import annotations

from beacon.dashboard.views import Dashboard

__all__ = ["Dashboard"]
