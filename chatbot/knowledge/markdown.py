"""A small Markdown renderer for the help pages that escapes first: headings (with the ids of
text.sections' anchors, so /help/<slug>#<anchor> opens a passage), paragraphs, lists, bold,
italic, inline code and links. Any HTML in an article is shown as text, never rendered; a link
is kept only to http(s) or a relative address (a ``javascript:`` one becomes its text)."""

from __future__ import annotations

import html
import re

from django.utils.safestring import SafeString, mark_safe

from chatbot.knowledge import text

HEADING = re.compile(r"^(#{2,6})\s+(.*?)\s*#*\s*$")  # as text.sections reads them
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|(\d{1,9})[.)])\s+(.*)$")
CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[([^\]]+)\]\(((?:[^()\s]|\([^()\s]*\))+)\)")
BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])|(?<![\w_])_(?!\s)(.+?)(?<!\s)_(?![\w_])")
SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def safe_url(url: str) -> str | None:
    """The address if it is http(s) or relative, else None. Browsers ignore tabs, newlines and
    control characters inside a scheme ("java\\tscript:"), so they are ignored here too."""
    compact = _CONTROL.sub("", url)
    match = SCHEME.match(compact)
    if match is None:
        return None if compact.startswith("\\") else url
    return url if match.group(1).lower() in ("http", "https") else None


def inline(source: str) -> str:
    """One block's text as HTML: escaped first, then code, links, bold and italic."""
    escaped = html.escape(source.replace("\x00", ""), quote=True)  # NUL marks the code spans below
    codes: list[str] = []

    def keep_code(match: re.Match) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    escaped = CODE.sub(keep_code, escaped)

    def link(match: re.Match) -> str:
        label, href = match.group(1), html.unescape(match.group(2))
        url = safe_url(href)
        if url is None:
            return label
        return f'<a href="{html.escape(url, quote=True)}" rel="nofollow noopener">{label}</a>'

    escaped = LINK.sub(link, escaped)
    escaped = BOLD.sub(lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", escaped)
    escaped = ITALIC.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", escaped)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], escaped)


def heading_anchors(body: str, *, title: str) -> list[str]:
    """The id of each ``##`` heading of the body, in order: the anchor text.sections gives its
    passage; a heading without text (no passage) gets a free one."""
    lines = (body or "").replace("\r\n", "\n").split("\n")
    headings: list[tuple[str, bool]] = []
    for i, line in enumerate(lines):
        match = HEADING.match(line)
        if match:
            following = []
            for rest in lines[i + 1 :]:
                if HEADING.match(rest):
                    break
                following.append(rest)
            headings.append((match.group(2).strip() or "Section", bool("".join(following).strip())))
    passages = iter(text.sections(body, title=title))
    anchors: list[str] = []
    for heading, has_text in headings:
        section = next(passages, None) if has_text else None
        if section is not None and section.heading == heading:
            anchors.append(section.anchor)
        else:
            anchors.append(text.anchor_for(heading, anchors))
    return anchors


def render(body: str, *, title: str) -> SafeString:
    """The article's body as safe HTML."""
    lines = (body or "").replace("\r\n", "\n").split("\n")
    anchors = iter(heading_anchors(body, title=title))
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag = ""

    def close() -> None:
        nonlocal paragraph, items, list_tag
        if paragraph:
            out.append(f"<p>{inline(' '.join(paragraph))}</p>")
            paragraph = []
        if items:
            out.append(f"<{list_tag}>" + "".join(f"<li>{inline(item)}</li>" for item in items) + f"</{list_tag}>")
            items, list_tag = [], ""

    for line in lines:
        heading = HEADING.match(line)
        item = LIST_ITEM.match(line)
        if heading:
            close()
            level = min(len(heading.group(1)), 4)
            anchor = html.escape(next(anchors), quote=True)
            label = heading.group(2).strip() or "Section"
            out.append(f'<h{level} id="{anchor}">{inline(label)}</h{level}>')
        elif not line.strip():
            close()
        elif item:
            tag = "ol" if item.group(1) else "ul"
            if paragraph or (items and tag != list_tag):
                close()
            list_tag = tag
            items.append(item.group(2))
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()
        else:
            if items:
                close()
            paragraph.append(line.strip())
    close()
    return mark_safe("\n".join(out))  # noqa: S308 - every piece of the article went through html.escape
