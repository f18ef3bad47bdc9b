/**
 * A small seeded generator for sampling: xoshiro128** with its state filled by splitmix32.
 *
 * It makes sampling reproducible for a given seed on any machine, but it cannot reproduce torch's generator
 * (Mersenne Twister / Philox) or the way torch.multinomial consumes it, so a seed gives the same text here every
 * time, not the text transformers gives for that seed.
 */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
    // Both 32-bit halves feed the state, so seeds that differ only above bit 32 still give different streams.
    const big = BigInt(seed);
    const lo = Number(BigInt.asUintN(32, big));
    const hi = Number(BigInt.asUintN(32, big >> 32n));
    let state = (lo ^ Math.imul(hi, 0x9e3779b1)) | 0;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      state = (state + 0x9e3779b9) | 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      words.push((z ^ (z >>> 16)) | 0);
    }
    [this.a, this.b, this.c, this.d] = words as [number, number, number, number];
    // xoshiro never leaves the all-zero state; splitmix32 practically never yields it, but be certain.
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** A uniform unsigned 32-bit integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform double in (0, 1): for logarithms, which must not see 0. */
  nextOpenDouble(): number {
    let u = this.nextDouble();
    while (u === 0) u = this.nextDouble();
    return u;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A seed for callers that did not ask for one: different on every call. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}
