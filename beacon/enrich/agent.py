"""User agent -> browser, major version, OS, OS version and device type.

Parsing is ua-parser with the uap-core rules (ua-parser-builtins) on its native regex
engine (ua-parser-rs); the device type is user-agents-ng's classification of that parse
(tablet, mobile, PC), so no list of families is kept here. The result is cached per user
agent string: a visit repeats its user agent, so the parse runs about once per visitor.
"""

from __future__ import annotations

import functools

import ua_parser
from ua_parser import Domain, Parser
from user_agents import parsers as ua_kind

FIELDS = ("browser", "browser_version", "os", "os_version", "device")


@functools.cache
def _parser() -> Parser:
    """A parser on the fastest engine installed, without ua-parser's own cache (ours is above it).
    Built once per process (~0.3 s) and shared: it holds no per-app state."""
    regex = getattr(ua_parser, "RegexResolver", None)
    matchers = ua_parser.load_lazy_builtins() if regex else ua_parser.load_builtins()
    parser = Parser(ua_parser.BestAvailableResolver(matchers))
    parser("Mozilla/5.0", Domain.ALL)  # builds the regex set now, not on the first request
    return parser


def _browser_name(family: str) -> str:
    """ "Mobile Safari" -> "Safari", "Chrome Mobile" -> "Chrome": the device column says mobile."""
    if family == "Other":
        return ""
    return " ".join(w for w in family.split() if w != "Mobile") or family


class Agents:
    def __init__(self) -> None:
        self.parser = _parser()

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one instance per process; user agents repeat
    def fields(self, ua: str, is_bot: bool) -> dict[str, str]:
        """The five agent columns; only non-empty ones are present. Treat the result as read-only."""
        if not ua:
            return {}
        r = self.parser(ua, Domain.ALL).complete()
        b, o, d = r.user_agent, r.os, r.device
        kind = ua_kind.UserAgent.__new__(ua_kind.UserAgent)  # classify our parse, without parsing again
        kind.ua_string = ua
        kind.browser = ua_kind.parse_browser(b.family, b.major, b.minor, b.patch) if b else ua_kind.parse_browser("Other")
        kind.os = ua_kind.parse_operating_system(o.family, o.major, o.minor, o.patch) if o else ua_kind.parse_operating_system("Other")
        kind.device = ua_kind.parse_device(d.family, d.brand, d.model) if d else ua_kind.parse_device("Other", None, None)
        if is_bot or kind.is_bot:
            device = "bot"
        elif kind.is_tablet:
            device = "tablet"
        elif kind.is_mobile:
            device = "mobile"
        elif kind.is_pc:
            device = "desktop"
        else:
            device = "other"
        out = {"device": device}
        if b and b.family != "Other":
            out["browser"] = _browser_name(b.family)
            if b.major:
                out["browser_version"] = b.major
        if o and o.family != "Other":
            out["os"] = o.family
            if o.major:
                out["os_version"] = f"{o.major}.{o.minor}" if o.minor else o.major
        return out
