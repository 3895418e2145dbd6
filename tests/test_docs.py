"""The markdown docs hold together: links resolve inside the repository, anchors name headings, the
README stays a front door.

Pure file reading (no imports of the package, no processes): runs in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150
# Directories that hold no documentation of ours (environments, caches, generated data).
SKIPPED_DIRS = {"node_modules", "__pycache__", "data", "build", "artifacts"}

# The pages whose relative links must all resolve.
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "bench" / "results").glob("*.md"),
    ]
)

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^\s)>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^\s<>]*)>")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_WEB = re.compile(r"^https?://", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _markdown_files() -> list[Path]:
    """Every markdown file in the repository, outside hidden and generated directories."""
    found = []
    for path in ROOT.rglob("*.md"):
        parts = path.relative_to(ROOT).parts[:-1]
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in parts):
            continue
        found.append(path)
    return sorted(found)


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line without code spans) for every line outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1) == fence:
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        lines.append((number, _CODE_SPAN.sub("", line)))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in `path`, code left out."""
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1)))
            continue
        found += [(number, match.group(1)) for match in _INLINE_LINK.finditer(line)]
        found += [(number, match.group(1)) for match in _AUTOLINK.finditer(line)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (repeats get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result = set()
    for _number, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def _problem(page: Path, target: str) -> str | None:
    """Why `target` (a link on `page`) is broken, or None when it is fine."""
    if _WEB.match(target):
        return None
    if _SCHEME.match(target):
        return "only http(s) links may leave the repository"
    if target.startswith("/"):
        return "an absolute path: link relative to the page instead"
    file_part, _, anchor = target.partition("#")
    resolved = (page.parent / unquote(file_part)).resolve() if file_part else page
    if not resolved.is_relative_to(ROOT):
        return "points outside the repository"
    if not resolved.exists():
        return f"{resolved.relative_to(ROOT)} does not exist"
    if anchor:
        if resolved.suffix != ".md":
            return "an anchor into a file that is not markdown"
        if anchor not in anchors(resolved):
            return f"no heading with the anchor #{anchor} in {resolved.relative_to(ROOT)}"
    return None


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", DOCS, ids=_name)
def test_every_relative_link_resolves_to_a_file_and_heading_of_the_repository(page: Path) -> None:
    broken = [
        f"{_name(page)}:{number}: {target}: {problem}"
        for number, target in links(page)
        if (problem := _problem(page, target)) is not None
    ]
    assert broken == []


def test_no_markdown_file_links_outside_the_repository() -> None:
    outside = []
    for page in _markdown_files():
        for number, target in links(page):
            problem = _problem(page, target)
            if problem in ("points outside the repository", "only http(s) links may leave the repository") or (
                problem is not None and problem.startswith("an absolute path")
            ):
                outside.append(f"{_name(page)}:{number}: {target}: {problem}")
        text = page.read_text(encoding="utf-8")
        if "../shared" in text or "/work/" in text:
            outside.append(f"{_name(page)}: names a path outside the repository (../shared or /work/)")
    assert outside == []


def test_readme_is_a_front_door_of_at_most_150_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_docs_pages_exist_and_the_readme_maps_them() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {target.partition("#")[0] for _number, target in links(ROOT / "README.md")}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert pages, "docs/ holds no pages"
    assert pages <= targets, f"README.md does not link {sorted(pages - targets)}"
    assert "make demo" in readme and "make test" in readme


def test_the_link_checker_finds_what_it_should() -> None:
    """The checker itself: links in code are ignored, every kind of broken link is caught."""
    assert slug("Plans, quotas and billing") == "plans-quotas-and-billing"
    assert slug("Backfills: `import`") == "backfills-import"
    assert slug("Where the code is moving") == "where-the-code-is-moving"
    readme = ROOT / "README.md"
    assert _problem(readme, "https://duckdb.org/") is None
    assert _problem(readme, "docs/events.md#exactly-once") is None
    assert _problem(readme, "../shared/ARCHITECTURE.md") == "points outside the repository"
    assert _problem(readme, "file:///etc/passwd") == "only http(s) links may leave the repository"
    assert _problem(readme, "/etc/passwd") is not None
    assert _problem(readme, "docs/no-such-page.md") is not None
    assert _problem(readme, "docs/events.md#no-such-heading") is not None
