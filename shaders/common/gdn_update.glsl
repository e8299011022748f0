// The state update of one Gated DeltaNet token for one state element, shared by gdn.comp and gdn_replay.comp so
// that redoing a token from its step log gives the bits the kernel that ran it gave:
//   s <- s * exp(g);   s <- fma(k^_i, delta_j, s)        (k^ = k * (1 / max(|k|, eps)))
// `precise` keeps every compiler from contracting or reordering these operations differently in the two shaders.
#ifndef VKMTP_GDN_UPDATE_GLSL
#define VKMTP_GDN_UPDATE_GLSL

float decayed(float s, float decay) {
    precise float r = s * decay;
    return r;
}

float normed_key(float k, float inv_k) {
    precise float r = k * inv_k;
    return r;
}

float rank1_update(float s, float k_hat, float delta) {
    precise float r = fma(k_hat, delta, s);
    return r;
}

#endif
