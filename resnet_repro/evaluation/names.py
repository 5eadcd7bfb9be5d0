"""The ImageNet test protocols by name, without torch (§3.4; implemented in `protocols.py`):
"center" (Figure 4's 224 centre crop), "ten_crop" (Tables 2-3) and "multi_scale" (Table 4).
`eval` takes them, its records carry them, the report reads them."""

from __future__ import annotations

PROTOCOLS = ("center", "ten_crop", "multi_scale")
