/** Percentiles and a row format shared by the benchmarks. */
export interface Summary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]! : NaN);
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    n: s.length,
    p50: round(at(0.5)),
    p95: round(at(0.95)),
    p99: round(at(0.99)),
    mean: round(s.reduce((a, b) => a + b, 0) / (s.length || 1)),
    min: round(s[0] ?? NaN),
    max: round(s[s.length - 1] ?? NaN),
  };
}

/** One line of bench/results.md: a timing summary or a single value, and its target when it has one. */
export interface Row {
  name: string;
  unit: string;
  value?: number;
  summary?: Summary;
  target?: string;
  met?: boolean;
  note?: string;
}
