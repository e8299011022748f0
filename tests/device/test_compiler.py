"""Shader build: disk cache hits and misses, clear compile errors."""

import pytest

from vkmtp.device import ShaderCompileError, ShaderCompiler, ShaderKey


def test_second_compile_is_a_cache_hit_and_a_changed_define_is_a_miss(tmp_path):
    first = ShaderCompiler(cache_dir=tmp_path)
    code = first.spirv(ShaderKey.make("scale_add.comp"))
    assert code[:4] == b"\x03\x02\x23\x07"  # SPIR-V magic, little-endian
    assert (first.misses, first.hits) == (1, 0)

    second = ShaderCompiler(cache_dir=tmp_path)  # a new process would start like this
    assert second.spirv(ShaderKey.make("scale_add.comp")) == code
    assert (second.misses, second.hits) == (0, 1)

    second.spirv(ShaderKey.make("scale_add.comp", UNUSED_FLAG=1))
    assert (second.misses, second.hits) == (1, 1)
    assert len(list(tmp_path.glob("*.spv"))) == 2


def test_changed_include_invalidates_the_cache(tmp_path):
    shaders = tmp_path / "shaders"
    (shaders / "common").mkdir(parents=True)
    (shaders / "common" / "val.glsl").write_text("#define VALUE 1.0\n")
    (shaders / "k.comp").write_text(
        "#version 450\n#extension GL_GOOGLE_include_directive : require\n#include \"val.glsl\"\n"
        "layout(local_size_x = 1) in;\nlayout(std430, binding = 0) buffer B { float b[]; };\n"
        "void main() { b[0] = VALUE; }\n")
    comp = ShaderCompiler(shader_dir=shaders, cache_dir=tmp_path / "cache")
    key = ShaderKey.make("k.comp")
    comp.spirv(key)
    (shaders / "common" / "val.glsl").write_text("#define VALUE 2.0\n")
    comp2 = ShaderCompiler(shader_dir=shaders, cache_dir=tmp_path / "cache")
    comp2.spirv(key)
    assert comp2.misses == 1


def test_compile_error_names_shader_line_and_message(tmp_path):
    shaders = tmp_path / "shaders"
    shaders.mkdir()
    (shaders / "bad.comp").write_text("#version 450\nlayout(local_size_x = 1) in;\nvoid main() {\n  undefined_fn();\n}\n")
    comp = ShaderCompiler(shader_dir=shaders, cache_dir=tmp_path / "cache")
    with pytest.raises(ShaderCompileError) as err:
        comp.spirv(ShaderKey.make("bad.comp", X=3))
    msg = str(err.value)
    assert "bad.comp" in msg and ":4:" in msg and "undefined_fn" in msg and "X" in msg


def test_every_listed_shader_variant_compiles(tmp_path):
    """What `vkmtp shaders --build-all` builds: every op's declared variants and every define-free shader."""
    from vkmtp.ops.variants import all_variants

    comp = ShaderCompiler(cache_dir=tmp_path)
    keys = all_variants()
    assert {k.source for k in keys} >= {"scale_add.comp", "spec.comp"}
    for key in keys:
        comp.spirv(key)
