import type { Metric, Registry } from 'prom-client';

/**
 * A Prometheus histogram for hot paths, exported through prom-client's registry like its own.
 *
 * prom-client's Histogram.observe builds a label/value pair, validates the labels and hashes the
 * labels object on every call: 2–3 µs each, measured in the tracking server's pixel path under
 * `bench:tracking --profile`, where it was ~4 % of the thread that answers HTTP. Here observe() is
 * one Map lookup by the label values and a scan of the bucket bounds (tens of nanoseconds).
 *
 * The exported values have the shape of prom-client's Histogram.get() (same metric names, `le`
 * label, cumulative buckets, +Inf, _sum and _count), so the text on /metrics is the same;
 * test/observability/histogram.test.ts compares the two. No exemplars, no timers: Sluice's callers
 * measure their own durations.
 */
export interface FastHistogramConfig<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly L[];
  /** Upper bounds, ascending (+Inf is implied). */
  readonly buckets: readonly number[];
  readonly registers?: readonly Registry[];
}

interface Series {
  readonly labels: Readonly<Record<string, string>>;
  /** Observations per bucket (not cumulative); index buckets.length is above the last bound. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

interface ValuePair {
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  value: number;
  metricName: string;
}

const NO_LABELS: Readonly<Record<string, string>> = Object.freeze({});

export class FastHistogram<L extends string = never> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly labelNames: readonly L[];
  private readonly bounds: Float64Array;
  private series = new Map<string, Series>();

  constructor(cfg: FastHistogramConfig<L>) {
    this.name = cfg.name;
    this.help = cfg.help;
    this.labelNames = cfg.labelNames ?? [];
    for (let i = 1; i < cfg.buckets.length; i++) {
      if (!((cfg.buckets[i] as number) > (cfg.buckets[i - 1] as number))) throw new Error(`${cfg.name}: buckets must be ascending`);
    }
    this.bounds = Float64Array.from(cfg.buckets);
    if (this.labelNames.length === 0) this.seriesOf(NO_LABELS);
    for (const r of cfg.registers ?? []) r.registerMetric(this as unknown as Metric);
  }

  /** observe(value) on a histogram without labels, observe(labels, value) on one with. */
  observe(labelsOrValue: Readonly<Record<L, string>> | number, value?: number): void {
    const labelled = typeof labelsOrValue !== 'number';
    const v = labelled ? (value as number) : labelsOrValue;
    if (!Number.isFinite(v)) throw new TypeError(`${this.name}: not a finite number: ${v}`);
    const s = this.seriesOf(labelled ? labelsOrValue : NO_LABELS);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && v > (bounds[i] as number)) i++;
    (s.counts[i] as number)++;
    s.sum += v;
    s.count++;
  }

  /** prom-client's metric interface: what the registry formats for /metrics. */
  get(): { name: string; help: string; type: string; aggregator: string; values: ValuePair[] } {
    const values: ValuePair[] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i] as number;
        values.push({ labels: { le: this.bounds[i] as number }, sharedLabels: s.labels, value: acc, metricName: bucket });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucket });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series = new Map();
    if (this.labelNames.length === 0) this.seriesOf(NO_LABELS);
  }

  private seriesOf(labels: Readonly<Record<string, string>>): Series {
    const names = this.labelNames;
    // One label (the common case here): its value is the key, no string is built.
    let key = names.length === 1 ? labels[names[0] as string] : '';
    if (names.length > 1) for (const n of names) key += `${labels[n] ?? ''}\u0000`;
    if (key === undefined) throw new Error(`${this.name}: label "${names[0]}" missing`);
    let s = this.series.get(key);
    if (s === undefined) {
      const own: Record<string, string> = {};
      for (const n of names) {
        const value = labels[n];
        if (typeof value !== 'string') throw new Error(`${this.name}: label "${n}" missing`);
        own[n] = value;
      }
      for (const n of Object.keys(labels)) if (!names.includes(n as L)) throw new Error(`${this.name}: unknown label "${n}"`);
      s = { labels: own, counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    return s;
  }
}
