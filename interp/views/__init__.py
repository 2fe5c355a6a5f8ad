"""Interactive views: every result with a plot also has `show()`, `save_html(path)` and an
inline Jupyter view (`_repr_html_`), drawn by the package's own small script (no CDN, no
network request). `interp.views.page` holds the machinery; each kind of view has a script
under `interp/views/static/` and a function here or a `to_view()` on its result."""

from interp.views.attention import attention_heads, attention_patterns
from interp.views.page import View, Viewable, assets, encode_array, kinds, static_scripts

__all__ = ["View", "Viewable", "assets", "attention_heads", "attention_patterns", "encode_array", "kinds",
           "static_scripts"]
