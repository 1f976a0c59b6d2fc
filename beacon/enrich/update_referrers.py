"""Rebuild `data/referrers.json` from Matomo's search engine, social network and AI assistant lists.

    python -m beacon.enrich.update_referrers            # download the lists (main branch)
    python -m beacon.enrich.update_referrers --from DIR # or read a local checkout of the repository

The lists are matomo-org/searchengine-and-social-list (CC0 1.0), maintained by the Matomo
community. They are YAML; Beacon ships them converted to one flat JSON table
{host pattern: [name, category]} so that loading it costs a millisecond and needs no YAML
parser at run time. PyYAML is only needed to run this script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import urllib.request
from pathlib import Path

REPO = "matomo-org/searchengine-and-social-list"
RAW = "https://raw.githubusercontent.com/" + REPO + "/{ref}/{name}"
# Order matters: a host in two lists keeps the first (chatgpt.com is an AI assistant before
# it is a search engine, as in Matomo's own detection order).
FILES = {"ai": "AIAssistants.yml", "search": "SearchEngines.yml", "social": "Socials.yml"}
OUT = Path(__file__).parent / "data" / "referrers.json"


def _read(source: str | None, ref: str, name: str) -> str:
    if source:
        return (Path(source) / name).read_text(encoding="utf-8")
    with urllib.request.urlopen(RAW.format(ref=ref, name=name), timeout=30) as resp:  # noqa: S310 - fixed https URL
        text: str = resp.read().decode("utf-8")
        return text


def _hosts(category: str, entry: object) -> list[str]:
    """The host patterns of one source: a list of them, or (search) of configurations, each with its urls."""
    if not isinstance(entry, list):
        raise ValueError(f"{category}: expected a list, not {entry!r:.80}")
    if category != "search":
        return [str(u) for u in entry]
    urls = []
    for conf in entry:
        listed = conf.get("urls", []) if isinstance(conf, dict) else None
        if not isinstance(listed, list):
            raise ValueError(f"{category}: expected a configuration with a list of urls, not {conf!r:.80}")
        urls += [str(u) for u in listed]
    return urls


def build(texts: dict[str, str]) -> dict[str, list[str]]:
    """Host pattern -> [source name, category]; the first list in FILES wins a shared host."""
    import yaml  # only the maintainer running the update needs it

    table: dict[str, list[str]] = {}
    for category in FILES:
        for name, entry in yaml.safe_load(texts[category]).items():
            for url in _hosts(category, entry):
                host = str(url).strip().lower().split("/", 1)[0]  # "bing.com/images/search": the host decides
                if host and host not in table:
                    table[host] = [str(name), category]
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", help="local checkout of " + REPO)
    p.add_argument("--ref", default="master", help="branch, tag or commit to download")
    args = p.parse_args()
    texts = {cat: _read(args.source, args.ref, name) for cat, name in FILES.items()}
    ref = args.ref
    if args.source:
        try:
            ref = subprocess.run(["git", "-C", args.source, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass  # not a git checkout: --ref names what it is
    doc = {
        "source": f"https://github.com/{REPO}",
        "ref": ref,
        "license": "CC0-1.0",
        "updated": dt.date.today().isoformat(),
        "hosts": dict(sorted(build(texts).items())),
    }
    # One host a line, so an update reads as a short diff.
    head = json.dumps({k: v for k, v in doc.items() if k != "hosts"}, ensure_ascii=False)[:-1]
    rows = ",\n".join(f"{json.dumps(h, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for h, v in doc["hosts"].items())
    OUT.write_text(f'{head}, "hosts": {{\n{rows}\n}}}}\n', encoding="utf-8")
    print(f"{OUT}: {len(doc['hosts'])} host patterns from {REPO}@{ref}")


if __name__ == "__main__":
    main()
