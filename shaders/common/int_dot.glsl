// dot4x8(a, b): the dot product of the 4 signed int8 in word a with the 4 in word b, as an int.
// With INT_DOT (the device enabled VK_KHR_shader_integer_dot_product's shaderIntegerDotProduct) it is one
// OpSDot on packed 4x8-bit vectors, emitted through GL_EXT_spirv_intrinsics (the glslang vkmtp uses predates
// GL_EXT_integer_dot_product); otherwise four bit-field extracts and multiply-adds, the same exact integer.
// The including shader enables GL_EXT_spirv_intrinsics when it defines INT_DOT.
#ifndef VKMTP_INT_DOT_GLSL
#define VKMTP_INT_DOT_GLSL

#ifdef INT_DOT
// OpSDotKHR (4450), capabilities DotProductKHR (6019) + DotProductInput4x8BitPackedKHR (6018);
// fmt 0 = PackedVectorFormat4x8Bit.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int sdot_packed4x8(uint a, uint b, spirv_literal int fmt);

int dot4x8(uint a, uint b) { return sdot_packed4x8(a, b, 0); }
#else
int dot4x8(uint a, uint b) {
    ivec4 x = ivec4(bitfieldExtract(int(a), 0, 8), bitfieldExtract(int(a), 8, 8), bitfieldExtract(int(a), 16, 8),
                    bitfieldExtract(int(a), 24, 8));
    ivec4 y = ivec4(bitfieldExtract(int(b), 0, 8), bitfieldExtract(int(b), 8, 8), bitfieldExtract(int(b), 16, 8),
                    bitfieldExtract(int(b), 24, 8));
    return x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
}
#endif

#endif
