"""mkdocs hook (mkdocs.yml `hooks:`): the README is the site's home page, and relative links that
leave `docs/` work in the site as they do on the repository's web page.

The pages are written to read well where they are: the README links `docs/patching.md` and
`results/views/patching.png`, a page links `../results/probe/chain.png`. mkdocs only knows the
files under `docs/`, so this hook

- serves README.md as `index.md`;
- adds every repository file such a link points to (a plot under `results/`) to the site, at its
  path from the repository root;
- rewrites each such link, in the page's markdown, to the path mkdocs knows.

A link to a file that does not exist is left as it is, so `mkdocs build --strict` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

# Inline links and images: [text](target) / ![alt](target "title"); fenced code is removed first.
LINK = re.compile(r"(!?\[[^\]]*\]\()(<[^>]*>|[^)\s]+)([^)]*\))")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)


def _roots(config) -> tuple[Path, Path]:
    docs = Path(config["docs_dir"]).resolve()
    return docs, Path(config["config_file_path"]).resolve().parent


def _source(file: File) -> Path:
    return Path(file.abs_src_path).resolve()


def _relative_target(url: str) -> str | None:
    """The path part of a relative link to a file, or None (external, absolute, anchor-only)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) or url.startswith(("/", "#")):
        return None
    return url.split("#", 1)[0].split("?", 1)[0] or None


def _rewrite(markdown: str, page_file: File, docs: Path, root: Path, files: Files | None) -> str:
    base = _source(page_file).parent
    page_dir = posixpath.dirname(page_file.src_uri)

    def one(match: re.Match) -> str:
        url = match.group(2).strip("<>")
        path = _relative_target(url)
        if path is None:
            return match.group(0)
        target = (base / path).resolve()
        if not target.is_file():
            return match.group(0)  # mkdocs reports it
        if target.is_relative_to(docs):
            uri = target.relative_to(docs).as_posix()
        elif target.is_relative_to(root):
            uri = target.relative_to(root).as_posix()
            if files is not None and files.get_file_from_path(uri) is None:
                files.append(File(uri, src_dir=str(root), dest_dir=files_dest[0], use_directory_urls=files_dest[1]))
        else:
            return match.group(0)
        new = posixpath.relpath(uri, page_dir or ".") + url[len(path):]
        return match.group(1) + new + match.group(3)

    out, last = [], 0
    for fence in FENCE.finditer(markdown):
        out.append(LINK.sub(one, markdown[last:fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(LINK.sub(one, markdown[last:]))
    return "".join(out)


files_dest: list = [None, None]


def on_files(files: Files, config) -> Files:
    docs, root = _roots(config)
    files_dest[:] = [config["site_dir"], config["use_directory_urls"]]
    if files.get_file_from_path("index.md") is None:
        files.append(File.generated(config, "index.md", abs_src_path=str(root / "README.md")))
    for file in list(files.documentation_pages()):  # add the repository files their links need
        _rewrite(_source(file).read_text(encoding="utf-8"), file, docs, root, files)
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    docs, root = _roots(config)
    return _rewrite(markdown, page.file, docs, root, None)
