"""The documentation: every relative link in README.md and the docs pages reaches a file (and a
heading, where it names one), mkdocs.yml's menu lists every page, and the site's configuration is
the offline one `make docs` builds with `mkdocs build --strict`."""

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"

# Inline links and images, [text](target) / ![alt](target "title"), outside code.
LINK = re.compile(r"!?\[[^\]]*\]\((<[^>]*>|[^)\s]+)[^)]*\)")


def pages() -> list[Path]:
    """The site's markdown pages (the notebooks' folder belongs to the notebooks, the hook to the build)."""
    return sorted(p for p in DOCS.rglob("*.md")
                  if not p.relative_to(DOCS).parts[0] in ("notebooks", "_hooks"))


def without_code(text: str) -> str:
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path: Path) -> list[str]:
    return [m.group(1).strip("<>") for m in LINK.finditer(without_code(path.read_text()))]


def is_relative(url: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) and not url.startswith("/")


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (mkdocs' default): ascii, no punctuation, lower case, spaces to -."""
    text = re.sub(r"`", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", without_code_blocks(path.read_text()), re.M)
    return {slug(h) for h in headings}


def without_code_blocks(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)


def nav_entries() -> list[str]:
    """The pages mkdocs.yml's nav lists, in order (`- Title: page.md` lines)."""
    text = CONFIG.read_text()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s*-\s*(?:\"[^\"]*\"|[^:\n]+):\s*(\S+\.md)\s*$", nav, re.M)


def test_every_relative_link_reaches_a_file_and_heading():
    checked, broken = 0, []
    for source in [ROOT / "README.md"] + pages():
        for url in links(source):
            if not is_relative(url):
                continue
            path, _, anchor = url.partition("#")
            target = (source.parent / path).resolve() if path else source
            if target == DOCS / "index.md":  # the site's home page is the README (docs/_hooks/repo_links.py)
                target = ROOT / "README.md"
            checked += 1
            if not target.is_file():
                broken.append(f"{source.relative_to(ROOT)}: {url} (no file {target.relative_to(ROOT)})")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{source.relative_to(ROOT)}: {url} (no heading #{anchor})")
    assert checked > 50
    assert broken == []


def test_readme_links_into_the_docs_and_shows_the_patching_view():
    urls = links(ROOT / "README.md")
    assert "results/views/patching.png" in urls
    linked = {(ROOT / u.partition("#")[0]).resolve() for u in urls if is_relative(u)}
    topic_pages = [p for p in pages() if p.parent == DOCS]
    assert [p.name for p in topic_pages if p not in linked] == []


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    headings = [line for line in lines if line.startswith("## ")]
    assert "## Two commands" in headings and "## Quick start" in headings


def test_nav_lists_every_page_once_and_only_pages_that_exist():
    nav = nav_entries()
    assert len(nav) == len(set(nav))
    listed = {DOCS / entry for entry in nav}
    assert sorted(str(p.relative_to(DOCS)) for p in pages() if p not in listed) == []
    # index.md is the README, served by the build hook; every other entry is a page.
    assert nav[0] == "index.md" and not (DOCS / "index.md").exists()
    assert [entry for entry in nav[1:] if not (DOCS / entry).is_file()] == []


def test_method_pages_are_in_the_order_their_examples_run():
    from test_readme import METHOD_PAGES

    nav = nav_entries()
    assert [entry for entry in nav if entry in METHOD_PAGES] == METHOD_PAGES
    start = nav.index(METHOD_PAGES[0])
    assert nav[start:start + len(METHOD_PAGES)] == METHOD_PAGES


def test_site_configuration_is_offline_and_strict():
    text = CONFIG.read_text()
    assert re.search(r"^docs_dir: docs$", text, re.M) and re.search(r"^strict: true$", text, re.M)
    assert re.search(r"^theme:\n  name: material\n  font: false", text, re.M)  # no web-font request
    plugins = re.search(r"^plugins:\n((?:  .*\n)+)", text, re.M).group(1)
    assert re.findall(r"^  - (\w+)", plugins, re.M) == ["search", "offline", "mkdocstrings"]
    assert "jupyter" not in text  # the notebooks are plain downloads
    hook = re.search(r"^hooks:\n  - (\S+)", text, re.M).group(1)
    assert (ROOT / hook).is_file() and hook.startswith("docs/_hooks/")
    assert "_hooks/" in text.split("exclude_docs:")[1].split("\n\n")[0]
    makefile = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict --site-dir site" in makefile


def test_api_pages_document_modules_that_exist():
    documented = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for module in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.M):
            documented[module] = page.name
            parts = module.split(".")
            for n in range(len(parts), 0, -1):  # the longest prefix that is a module; the rest names an object in it
                base = ROOT / Path(*parts[:n])
                source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
                if source.is_file():
                    break
            else:
                raise AssertionError(f"{page.name}: no module for {module}")
            for name in parts[n:]:
                assert re.search(rf"^(def|class) {name}\b", source.read_text(), re.M), (page.name, module)
    for module in ("interp.patching", "interp.views", "probes.ffn", "probes.edit", "probes.sae",
                   "interp.circuits", "models"):
        assert module in documented, module


def test_search_worker_polyfill_is_ours():
    """mkdocs-material's `offline` plugin would load a Worker polyfill from unpkg.com unless
    extra.polyfills already names one whose path holds "iframe-worker": ours, in docs/assets/."""
    text = CONFIG.read_text()
    polyfills = re.search(r"^extra:\n  polyfills:\n((?:    - .*\n)+)", text, re.M).group(1)
    names = re.findall(r"- (\S+)", polyfills)
    assert names == ["assets/iframe-worker-shim.js"] and (DOCS / names[0]).is_file()
    assert "http" not in (DOCS / names[0]).read_text().split("*/", 1)[1]


def test_search_worker_polyfill_runs_a_worker_from_file(tmp_path, browser):
    """On a file:// page (where Chromium refuses `new Worker(url)`) the polyfill runs the worker's
    script: messages go both ways, listeners and onmessage both hear them, nothing is fetched."""
    shim = (DOCS / "assets" / "iframe-worker-shim.js").read_text()
    (tmp_path / "shim.js").write_text(shim)
    (tmp_path / "worker.js").write_text(
        "var seen = 0;\n"
        "addEventListener('message', function (e) { seen += 1; postMessage({answer: e.data.x * 2 + 2, seen: seen}); });\n")
    (tmp_path / "page.html").write_text("""<!doctype html><html><head><script src="shim.js"></script></head><body>
<div class="interp-view" id="v"></div>
<script>
  var v = document.getElementById("v"), heard = [];
  var w = new Worker("worker.js");
  w.onmessage = function (e) { heard.push("onmessage " + e.data.answer); };
  w.addEventListener("message", function (e) {
    heard.push("listener " + e.data.answer + " " + e.data.seen);
    if (heard.length === 4) { v.textContent = heard.join("; "); v.setAttribute("data-rendered", ""); }
  });
  w.postMessage({x: 20});   // sent before the worker's script has loaded: queued
  setTimeout(function () { w.postMessage({x: 1}); }, 50);
</script></body></html>""")
    page = browser.open(tmp_path / "page.html")
    try:
        assert page.evaluate("window.Worker.name") == "FrameWorker"
        heard = page.inner_text("#v").split("; ")
        assert sorted(heard) == sorted(["onmessage 42", "listener 42 1", "onmessage 4", "listener 4 2"])
        assert browser.problems(page) == []
    finally:
        page.context.close()
