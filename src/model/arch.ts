/**
 * The architectures edgellm runs, one row each (ggml's type_traits idea applied to architectures): which tensors a
 * model of that architecture has and which optional steps its block runs. The one forward pass (llama.ts) reads these
 * flags; nothing else names an architecture. Rows follow llama.cpp's graph code (src/models/*.cpp) and converters.
 */
export interface Architecture {
  /** general.architecture */
  name: string;
  /** RoPE pairs: 'norm' rotates (2i, 2i+1), 'neox' rotates (i, i + nRot/2); llama.cpp picks it by architecture */
  ropeMode: 'norm' | 'neox';
  /** attn_q/k/v.bias added after the projections (before RoPE): required, read when present, or never read */
  qkvBias: 'required' | 'optional' | 'none';
  /** attn_q_norm / attn_k_norm: an RMSNorm over each head of q and k before RoPE, one weight vector for all heads */
  qkNorm: boolean;
  /** post_attention_norm / post_ffw_norm: RMSNorm of each block's output before the residual add (Gemma's sandwich) */
  postNorms: boolean;
  /** attn_qkv: one matrix whose output rows are Q, then K, then V (Phi-3) */
  fusedQKV: boolean;
  /** ffn_up holds gate then up (2·ffn rows), no ffn_gate (Phi-3) */
  fusedGateUp: boolean;
  /** the FFN's gate activation: SiLU (SwiGLU) or GELU with the tanh approximation (GEGLU) */
  ffnActivation: 'silu' | 'gelu';
  /** the input embedding × √dim (Gemma); the tied classifier uses the unscaled matrix */
  scaleEmbedding: boolean;
  /** rope_freqs.weight (Llama 3.x RoPE scaling), read when present: each rotary frequency is divided by its factor */
  ropeFreqs: boolean;
  /**
   * rope_factors_short/long.weight (Phi-3 LongRoPE), read when present: frequency divisors as rope_freqs, the long set
   * when the context exceeds rope.scaling.original_context_length (llama.cpp's choice), with rope.scaling.attn_factor
   */
  longRope: boolean;
  /**
   * Sliding-window layers: the default of attention.sliding_window_pattern (layer l is local iff l % n < n − 1), or 0
   * where the architecture has no local layers.
   */
  swaPattern: number;
  /** the window when attention.sliding_window is absent (llama.cpp's default), or 0 when the key is required */
  swaWindowDefault: number;
  /**
   * Local layers' own RoPE (llama.cpp's gemma3): this base when rope.freq_base_swa is absent, and no linear scaling;
   * 0 = the global layers' base and scaling (llama.cpp's default for the others)
   */
  swaRopeBase: number;
  /**
   * attn_logit_softcapping and final_logit_softcapping are read (Gemma 2 and 3), with these values when absent (0 =
   * no soft-cap): Gemma 2 always caps, Gemma 3 only where the file says so
   */
  softcaps: boolean;
  attnSoftcapDefault: number;
  finalSoftcapDefault: number;
  /**
   * The layer count by which llama.cpp tells this architecture's 27B model, whose queries are scaled by 1/√(dim/heads)
   * (HF's query_pre_attn_scalar) instead of 1/√headDim; 0 = always 1/√headDim
   */
  wideQueryScaleLayers: number;
  /** output.weight is never read: the embedding is the classifier (llama.cpp's gemma2 graph) */
  alwaysTied: boolean;
}

const LLAMA: Architecture = {
  name: 'llama', ropeMode: 'norm', qkvBias: 'optional', qkNorm: false, postNorms: false, fusedQKV: false, fusedGateUp: false,
  ffnActivation: 'silu', scaleEmbedding: false, ropeFreqs: true, longRope: false, swaPattern: 0, swaWindowDefault: 0, swaRopeBase: 0,
  softcaps: false, attnSoftcapDefault: 0, finalSoftcapDefault: 0, wideQueryScaleLayers: 0, alwaysTied: false,
};

export const ARCHITECTURES: readonly Architecture[] = [
  LLAMA,
  { ...LLAMA, name: 'qwen2', ropeMode: 'neox', qkvBias: 'required', ropeFreqs: false },
  { ...LLAMA, name: 'qwen3', ropeMode: 'neox', qkvBias: 'none', qkNorm: true, ropeFreqs: false },
  { ...LLAMA, name: 'phi3', ropeMode: 'neox', qkvBias: 'none', fusedQKV: true, fusedGateUp: true, ropeFreqs: false, longRope: true },
  {
    ...LLAMA, name: 'gemma2', ropeMode: 'neox', qkvBias: 'none', postNorms: true, ffnActivation: 'gelu', scaleEmbedding: true,
    ropeFreqs: false, swaPattern: 2, swaWindowDefault: 4096, softcaps: true, attnSoftcapDefault: 50, finalSoftcapDefault: 30, wideQueryScaleLayers: 46,
    alwaysTied: true,
  },
  {
    ...LLAMA, name: 'gemma3', ropeMode: 'neox', qkvBias: 'none', qkNorm: true, postNorms: true, ffnActivation: 'gelu',
    scaleEmbedding: true, ropeFreqs: false, swaPattern: 6, swaRopeBase: 10000, softcaps: true, wideQueryScaleLayers: 62,
  },
];

export const SUPPORTED_ARCHITECTURES = ARCHITECTURES.map((a) => a.name);

export function architecture(name: string): Architecture | undefined {
  return ARCHITECTURES.find((a) => a.name === name);
}
