"""Checks that a generated HTML page is balanced, its inline SVG is well-formed XML, and it fetches
nothing when viewed (no scripts, stylesheets or images from elsewhere)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

SVG_NS = "{http://www.w3.org/2000/svg}"
_VOID = {"meta", "br", "img", "hr", "input", "link", "col", "area", "base", "source", "wbr"}


class _Balance(HTMLParser):
    """Records a closing tag that does not match the open one, and what is left open at the end."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []
        self.fetches: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value and not value.startswith("#"):
                self.fetches.append(f"<{tag} {key}={value}>")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at line {self.getpos()[0]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def well_formed(page: str) -> str:
    """Asserts the page is a balanced, self-contained HTML document; returns its text content."""
    assert page.startswith("<!DOCTYPE html>"), page[:80]
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.problems == [] and checker.stack == [], (checker.problems, checker.stack)
    assert checker.fetches == [], checker.fetches
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)  # raises on malformed XML
    return "".join(checker.text)


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.S)]


def sample_circles(svg: ET.Element) -> list[ET.Element]:
    """The circles that stand for SLI samples (not the legend's)."""
    return [c for c in svg.iter(f"{SVG_NS}circle") if "sample" in (c.get("class") or "").split()]
