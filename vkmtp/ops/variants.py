"""Every shader variant vkmtp may use, for `vkmtp shaders --build-all` (warms the SPIR-V cache).

Each op module may define `shader_variants() -> list[ShaderKey]`; shaders without defines are listed directly.
"""

from __future__ import annotations

import importlib
import pkgutil

from vkmtp.device.compiler import SHADER_DIR, ShaderKey


def all_variants() -> list[ShaderKey]:
    keys: list[ShaderKey] = []
    import vkmtp.ops as ops_pkg

    for mod in pkgutil.iter_modules(ops_pkg.__path__):
        module = importlib.import_module(f"vkmtp.ops.{mod.name}")
        fn = getattr(module, "shader_variants", None)
        if fn is not None:
            keys.extend(fn())
    listed = {k.source for k in keys}
    for path in sorted(SHADER_DIR.glob("*.comp")):
        text = path.read_text()
        if path.name not in listed and "DATA_A_" not in text and "#if defined(MODE_" not in text:
            keys.append(ShaderKey.make(path.name))
    return list(dict.fromkeys(keys))
